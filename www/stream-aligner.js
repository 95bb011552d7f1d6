// stream-aligner in the browser: the JavaScript half of the API.
//
//   const aligner = await StreamAligner.load({ aligner: { base, adapter }, onProgress });
//   for await (const ev of aligner.stream(query, { maxRounds, signal })) { ev.original; ev.corrected; ev.changed }
//   const { text, events } = await aligner.correct(query, answer);
//   aligner.addEventListener('sentence', (e) => e.detail);
//
// Weights are fetched with progress and kept in Cache Storage (a reload reads them from there).
// The upstream and the aligner share one base model, held once; the aligner is the base plus a
// LoRA adapter. WebGPU is used when the browser offers an adapter, else burn's CPU backend runs
// in wasm (`aligner.backend` says which).

import init, { Session, Cancel } from './pkg/stream_aligner.js';

const CACHE = 'stream-aligner-weights-v1';

/** Bytes of `url`, from Cache Storage when there, else downloaded (with progress) and cached. */
async function fetchCached(url, what, onProgress) {
  const cache = globalThis.caches ? await caches.open(CACHE).catch(() => null) : null;
  let res = cache ? await cache.match(url) : undefined;
  const cached = !!res;
  if (!res) {
    try {
      res = await fetch(url);
    } catch (e) {
      throw new Error(`${what}: could not fetch ${url} (${e.message})`);
    }
    if (!res.ok) throw new Error(`${what}: ${url} answered HTTP ${res.status}`);
  }
  const total = Number(res.headers.get('content-length')) || 0;
  const reader = res.body.getReader();
  const chunks = [];
  let loaded = 0;
  for (;;) {
    const { done, value } = await reader.read();
    if (done) break;
    chunks.push(value);
    loaded += value.length;
    onProgress?.({ what, url, loaded, total, cached });
  }
  const bytes = new Uint8Array(loaded);
  let at = 0;
  for (const c of chunks) { bytes.set(c, at); at += c.length; }
  if (!cached && cache) {
    await cache.put(url, new Response(bytes, { headers: { 'content-length': String(loaded) } })).catch(() => {});
  }
  return bytes;
}

/** Sentence events as the library emits them, with camelCase names. */
function toEvent(json) {
  const e = JSON.parse(json);
  return {
    index: e.index, original: e.original, corrected: e.corrected, changed: e.changed,
    aligned: e.aligned, upstreamMs: e.upstream_ms, alignerMs: e.aligner_ms,
    upstreamTokens: e.upstream_tokens, alignerTokens: e.aligner_tokens,
    acceptedTokens: e.accepted_tokens,
  };
}

export class StreamAligner extends EventTarget {
  #session;

  constructor(session) {
    super();
    this.#session = session;
  }

  /**
   * Loads the models. `aligner.base` (or `upstream.local`) is the GGUF's URL, `aligner.adapter`
   * the LoRA adapter's (safetensors). `webgpu: false` forces the CPU backend.
   */
  static async load({ upstream = {}, aligner = {}, onProgress, webgpu = true, wasm } = {}) {
    if (upstream.remote) {
      throw new Error('a remote upstream is not available in the browser build yet: use upstream.local');
    }
    const baseUrl = aligner.base ?? upstream.local;
    if (!baseUrl) throw new Error('StreamAligner.load: give the base model URL (aligner.base or upstream.local)');
    if (upstream.local && aligner.base && upstream.local !== aligner.base) {
      throw new Error('upstream.local and aligner.base must be the same base model: it is held once');
    }
    await init(wasm);
    const base = await fetchCached(baseUrl, 'base model', onProgress);
    const adapter = aligner.adapter ? await fetchCached(aligner.adapter, 'adapter', onProgress) : undefined;
    let gpu = false;
    if (webgpu && globalThis.navigator?.gpu) {
      gpu = !!(await navigator.gpu.requestAdapter().catch(() => null));
    }
    return new StreamAligner(await Session.create(base, adapter, gpu));
  }

  /** 'webgpu', or 'cpu' when WebGPU is unavailable. */
  get backend() {
    return this.#session.backend;
  }

  /** Runs one answer; resolves to { text, events }. Events also go to `onEvent` and listeners. */
  async #run(query, options, onEvent) {
    const { signal, ...rest } = options;
    if (signal?.aborted) throw new DOMException('aborted', 'AbortError');
    const cancel = new Cancel();
    const abort = () => cancel.cancel();
    signal?.addEventListener('abort', abort, { once: true });
    try {
      const json = await this.#session.run(query, JSON.stringify(rest), (e) => {
        const ev = toEvent(e);
        onEvent?.(ev);
        this.dispatchEvent(new CustomEvent('sentence', { detail: ev }));
      }, cancel);
      const a = JSON.parse(json);
      return { text: a.text, events: a.events.map((e) => toEvent(JSON.stringify(e))) };
    } catch (e) {
      if (signal?.aborted) throw new DOMException('aborted', 'AbortError');
      throw e instanceof Error ? e : new Error(String(e));
    } finally {
      signal?.removeEventListener('abort', abort);
      cancel.free();
    }
  }

  /** The answer to `query`, sentence by sentence as each is corrected. */
  async *stream(query, { maxRounds, maxSentences, maxTokens, signal, mode = 'stream' } = {}) {
    const queue = [];
    let wake = () => {};
    let finished = false;
    let failure;
    this.#run(query, { mode, maxRounds, maxSentences, maxTokens, signal }, (ev) => {
      queue.push(ev);
      wake();
    }).then(() => { finished = true; wake(); }, (e) => { failure = e; finished = true; wake(); });
    for (;;) {
      if (queue.length) { yield queue.shift(); continue; }
      if (finished) break;
      await new Promise((r) => { wake = r; });
    }
    if (failure) throw failure;
  }

  /** Post-hoc correction of a complete answer (what an extension rewriting output needs). */
  correct(query, answer, { maxSentences, signal } = {}) {
    return this.#run(query, { mode: 'posthoc', answer, maxSentences, signal });
  }
}
