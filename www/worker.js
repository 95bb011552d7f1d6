// The Web Worker behind StreamAlignerWorker: runs the models off the page's thread and talks
// to it in messages ({ id, type, ... }).
import { StreamAligner } from './stream-aligner.js';

let aligner;
const running = new Map();

self.onmessage = async ({ data }) => {
  const { id, type } = data;
  const reply = (msg) => self.postMessage({ id, ...msg });
  try {
    if (type === 'load') {
      aligner = await StreamAligner.load({ ...data.options, onProgress: (progress) => reply({ type: 'progress', progress }) });
      reply({ type: 'loaded', backend: aligner.backend, notice: aligner.notice, threads: aligner.threads });
    } else if (type === 'stream') {
      const ctl = new AbortController();
      running.set(id, ctl);
      for await (const event of aligner.stream(data.query, { ...data.options, signal: ctl.signal })) {
        reply({ type: 'event', event });
      }
      reply({ type: 'done' });
    } else if (type === 'correct') {
      const ctl = new AbortController();
      running.set(id, ctl);
      const onEvent = (event) => reply({ type: 'event', event });
      reply({ type: 'done', result: await aligner.correct(data.query, data.answer, { ...data.options, signal: ctl.signal, onEvent }) });
    } else if (type === 'generate') {
      const ctl = new AbortController();
      running.set(id, ctl);
      reply({ type: 'done', result: await aligner.generate(data.prompt, { ...data.options, signal: ctl.signal }) });
    } else if (type === 'abort') {
      running.get(data.target)?.abort();
    }
  } catch (e) {
    reply({ type: 'error', name: e?.name ?? 'Error', message: e?.message ?? String(e) });
  } finally {
    running.delete(id);
  }
};
