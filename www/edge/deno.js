// The aligning gateway on Deno: `deno run --allow-read --allow-net --allow-env deno.js` (run.sh
// passes the settings as environment variables). The CPU-only wasm build and the model are read
// from local paths.
import init, { Session, Cancel } from '../pkg-cpu/stream_aligner.js';
import { createGateway } from './gateway.js';

const env = (k, d) => Deno.env.get(k) ?? d;
const root = new URL('../../', import.meta.url);
const path = (p) => (p.startsWith('/') ? p : new URL(p, root).pathname);

await init({ module_or_path: await Deno.readFile(new URL('../pkg-cpu/stream_aligner_bg.wasm', import.meta.url)) });
const gateway = createGateway({
  Session,
  Cancel,
  load: async () => ({
    base: await Deno.readFile(path(env('STREAM_ALIGNER_MODEL', 'models/SmolLM2-135M-Instruct.Q4_1.gguf'))),
    adapter: await Deno.readFile(path(env('STREAM_ALIGNER_ADAPTER', 'models/aligner/lora/adapter.safetensors'))),
  }),
  upstream: {
    baseUrl: env('STREAM_ALIGNER_UPSTREAM'),
    model: env('STREAM_ALIGNER_UPSTREAM_MODEL', 'default'),
    apiKey: env('STREAM_ALIGNER_API_KEY'),
  },
  maxActive: Number(env('STREAM_ALIGNER_MAX_ACTIVE', '4')),
});
Deno.serve({ hostname: '127.0.0.1', port: Number(env('PORT', '8787')), onListen: ({ port }) => console.error(`aligning gateway (Deno) on http://127.0.0.1:${port}/v1`) }, (req) => gateway.fetch(req));
