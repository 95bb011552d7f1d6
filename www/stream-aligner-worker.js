// StreamAlignerWorker: the StreamAligner API with the models in a Web Worker, so the page stays
// responsive while they run. Same methods, same events:
//
//   const aligner = await StreamAlignerWorker.load({ aligner: { base, adapter }, onProgress });
//   for await (const ev of aligner.stream(query, { signal })) { ... }
//   aligner.terminate();

let nextId = 1;

function failure({ name, message }) {
  return name === 'AbortError' ? new DOMException(message, 'AbortError') : Object.assign(new Error(message), { name });
}

export class StreamAlignerWorker extends EventTarget {
  #worker;
  #handlers = new Map();
  backend;
  threads = 1;

  constructor(worker) {
    super();
    this.#worker = worker;
    worker.onmessage = ({ data }) => this.#handlers.get(data.id)?.(data);
    worker.onerror = (e) => {
      for (const h of this.#handlers.values()) h({ type: 'error', name: 'Error', message: `worker failed: ${e.message}` });
    };
  }

  #call(msg, onMessage) {
    const id = nextId++;
    this.#handlers.set(id, (data) => {
      if (data.type === 'done' || data.type === 'error' || data.type === 'loaded') this.#handlers.delete(id);
      onMessage(data);
    });
    this.#worker.postMessage({ id, ...msg });
    return id;
  }

  get upstream() {
    return this.remote ? 'remote' : 'local';
  }

  static async load({ onProgress, ...options } = {}) {
    const a = new StreamAlignerWorker(new Worker(new URL('./worker.js', import.meta.url), { type: 'module' }));
    const loaded = await new Promise((resolve, reject) => a.#call({ type: 'load', options }, (d) => {
      if (d.type === 'progress') onProgress?.(d.progress);
      else if (d.type === 'loaded') resolve(d);
      else if (d.type === 'error') reject(failure(d));
    }));
    a.backend = loaded.backend;
    a.notice = loaded.notice;
    a.threads = loaded.threads;
    a.remote = !!options.upstream?.remote;
    return a;
  }

  async *stream(query, { signal, ...options } = {}) {
    if (signal?.aborted) throw new DOMException('aborted', 'AbortError');
    const queue = [];
    let wake = () => {};
    let finished = false;
    let error;
    const id = this.#call({ type: 'stream', query, options }, (d) => {
      if (d.type === 'event') {
        queue.push(d.event);
        this.dispatchEvent(new CustomEvent('sentence', { detail: d.event }));
      } else if (d.type === 'done') finished = true;
      else if (d.type === 'error') { error = failure(d); finished = true; }
      wake();
    });
    const abort = () => this.#worker.postMessage({ id: nextId++, type: 'abort', target: id });
    signal?.addEventListener('abort', abort, { once: true });
    try {
      for (;;) {
        if (queue.length) { yield queue.shift(); continue; }
        if (finished) break;
        await new Promise((r) => { wake = r; });
      }
      if (error) throw error;
    } finally {
      signal?.removeEventListener('abort', abort);
    }
  }

  /** A request answered by one 'done' (its result), with 'event's on the way. */
  #request(msg, signal) {
    if (signal?.aborted) return Promise.reject(new DOMException('aborted', 'AbortError'));
    return new Promise((resolve, reject) => {
      const id = this.#call(msg, (d) => {
        if (d.type === 'event') this.dispatchEvent(new CustomEvent('sentence', { detail: d.event }));
        else if (d.type === 'done') resolve(d.result);
        else if (d.type === 'error') reject(failure(d));
      });
      signal?.addEventListener('abort', () => this.#worker.postMessage({ id: nextId++, type: 'abort', target: id }), { once: true });
    });
  }

  correct(query, answer, { signal, ...options } = {}) {
    return this.#request({ type: 'correct', query, answer, options }, signal);
  }

  generate(prompt, { signal, ...options } = {}) {
    return this.#request({ type: 'generate', prompt, options }, signal);
  }

  terminate() {
    this.#worker.terminate();
  }
}
