// The aligning gateway on workerd. workerd, like Cloudflare, compiles no wasm at run time: the
// module is declared in the config (run.sh writes it) and imported here. The model and the
// adapter come from a disk service binding (MODELS); the upstream from text bindings.
import wasm from './stream_aligner_bg.wasm';
import init, { Session, Cancel } from './stream_aligner.js';
import { createGateway } from './gateway.js';

let gateway = null;

export default {
  async fetch(request, env) {
    if (!gateway) {
      await init({ module_or_path: wasm });
      const read = async (name) => {
        const r = await env.MODELS.fetch(`http://models/${name}`);
        if (!r.ok) throw new Error(`models/${name}: HTTP ${r.status}`);
        return new Uint8Array(await r.arrayBuffer());
      };
      gateway = createGateway({
        Session,
        Cancel,
        load: async () => ({ base: await read(env.MODEL), adapter: await read(env.ADAPTER) }),
        upstream: { baseUrl: env.UPSTREAM, model: env.UPSTREAM_MODEL, apiKey: env.STREAM_ALIGNER_API_KEY },
        maxActive: Number(env.MAX_ACTIVE ?? '4'),
      });
    }
    return gateway.fetch(request);
  },
};
