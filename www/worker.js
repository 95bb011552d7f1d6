// The Web Worker behind StreamAlignerWorker: runs the models off the page's thread and talks
// to it in messages ({ id, type, ... }).
import { StreamAligner } from './stream-aligner.js';

let aligner;
const running = new Map();

self.onmessage = async ({ data }) => {
  const { id, type } = data;
  const reply = (msg) => self.postMessage({ id, ...msg });
  // The signal of a request that an 'abort' message naming its id stops.
  const abortable = () => {
    const ctl = new AbortController();
    running.set(id, ctl);
    return ctl.signal;
  };
  try {
    if (type === 'load') {
      aligner = await StreamAligner.load({ ...data.options, onProgress: (progress) => reply({ type: 'progress', progress }) });
      reply({ type: 'loaded', backend: aligner.backend, notice: aligner.notice, threads: aligner.threads });
    } else if (type === 'stream') {
      for await (const event of aligner.stream(data.query, { ...data.options, signal: abortable() })) {
        reply({ type: 'event', event });
      }
      reply({ type: 'done' });
    } else if (type === 'correct') {
      const onEvent = (event) => reply({ type: 'event', event });
      reply({ type: 'done', result: await aligner.correct(data.query, data.answer, { ...data.options, signal: abortable(), onEvent }) });
    } else if (type === 'generate') {
      reply({ type: 'done', result: await aligner.generate(data.prompt, { ...data.options, signal: abortable() }) });
    } else if (type === 'abort') {
      running.get(data.target)?.abort();
    }
  } catch (e) {
    reply({ type: 'error', name: e?.name ?? 'Error', message: e?.message ?? String(e) });
  } finally {
    running.delete(id);
  }
};
