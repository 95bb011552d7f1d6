// stream-aligner in the browser: the JavaScript half of the API.
//
//   const aligner = await StreamAligner.load({ aligner: { base, adapter }, onProgress });
//   for await (const ev of aligner.stream(query, { maxRounds, signal })) { ev.original; ev.corrected; ev.changed }
//   const { text, events } = await aligner.correct(query, answer);
//   aligner.addEventListener('sentence', (e) => e.detail);
//
// Weights are fetched with progress and kept in Cache Storage (a reload reads them from there).
// The upstream and the aligner share one base model, held once; the aligner is the base plus a
// LoRA adapter. WebGPU is used when the browser offers an adapter, else our CPU kernels run
// in wasm (`aligner.backend` says which): on several threads when the page is cross-origin
// isolated and the threads package (pkg-threads/, built by `www/build.sh threads`) is there,
// else on one (`aligner.threads` says how many).

import * as single from './pkg/stream_aligner.js';

/** The threads package, initialized with its pool of Web Workers (once a page: rayon's pool is global). */
let threaded;
/** The package whose splitSentences serves the static method: the first one loaded. */
let loaded;

async function singlePackage(wasm) {
  await single.default(wasm ? { module_or_path: wasm } : undefined);
  loaded ??= single;
  return single;
}

/** The threads package with `n` threads, or null when the page is not isolated or it is missing. */
async function threadsPackage(n) {
  if (!globalThis.crossOriginIsolated || n <= 1) return null;
  threaded ??= (async () => {
    const pkg = await import('./pkg-threads/stream_aligner.js');
    await pkg.default();
    await pkg.initThreadPool(n);
    return pkg;
  })().catch((e) => {
    console.warn(`stream-aligner: no wasm threads here (${e.message}); the CPU path runs on one thread`);
    return null;
  });
  const pkg = await threaded;
  if (pkg) loaded ??= pkg;
  return pkg;
}

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

/** Whether an adapter is a software rasterizer: WebGPU there runs at seconds a token. */
function isSoftware(adapter) {
  const info = adapter.info ?? {};
  const names = [info.vendor, info.architecture, info.device, info.description].join(' ');
  return !!(adapter.isFallbackAdapter || info.isFallbackAdapter || /swiftshader|llvmpipe|lavapipe|software/i.test(names));
}

/** WebGPU or the CPU, as `webgpu` (true, 'force' or false) and the browser's adapter allow. */
async function chooseBackend(webgpu) {
  if (!webgpu) return { gpu: false, notice: 'WebGPU is off (webgpu: false): running on the CPU in WebAssembly.' };
  const adapter = globalThis.navigator?.gpu ? await navigator.gpu.requestAdapter().catch(() => null) : null;
  if (!adapter) return { gpu: false, notice: 'WebGPU is not available here: running on the CPU in WebAssembly (slower).' };
  if (webgpu !== 'force' && isSoftware(adapter)) {
    return { gpu: false, notice: "This browser's WebGPU adapter is a software renderer: running on the CPU in WebAssembly, which is faster here (webgpu: 'force' overrides)." };
  }
  return { gpu: true, notice: null };
}

export class StreamAligner extends EventTarget {
  #session;
  #remote;
  #pkg;

  constructor(session, remote, pkg) {
    super();
    this.#session = session;
    this.#remote = remote;
    this.#pkg = pkg;
  }

  /**
   * Loads the models. `aligner.base` (or `upstream.local`) is the GGUF's URL, `aligner.adapter`
   * the LoRA adapter's (safetensors). `upstream.remote` ({ baseUrl, model, apiKey, api:
   * 'completions' | 'chat', timeoutMs }) makes an OpenAI-compatible server the upstream, reached
   * with fetch; the local base model is then the aligner's only. WebGPU is used when the browser
   * offers a hardware adapter; a software one (SwiftShader, llvmpipe: seconds a token) gets the
   * CPU path and a `notice` saying so, unless `webgpu: 'force'`. `webgpu: false` forces the CPU.
   */
  static async load({ upstream = {}, aligner = {}, onProgress, webgpu = true, wasm, threads } = {}) {
    if (upstream.remote && !upstream.remote.baseUrl) {
      throw new Error('upstream.remote needs a baseUrl (e.g. http://127.0.0.1:8080/v1)');
    }
    const baseUrl = aligner.base ?? upstream.local;
    if (!baseUrl) throw new Error('StreamAligner.load: give the base model URL (aligner.base or upstream.local)');
    if (upstream.local && aligner.base && upstream.local !== aligner.base) {
      throw new Error('upstream.local and aligner.base must be the same base model: it is held once');
    }
    const { gpu, notice } = await chooseBackend(webgpu);
    const cores = threads ?? globalThis.navigator?.hardwareConcurrency ?? 1;
    const pkg = (!gpu && await threadsPackage(cores)) || await singlePackage(wasm);
    const base = await fetchCached(baseUrl, 'base model', onProgress);
    const adapter = aligner.adapter ? await fetchCached(aligner.adapter, 'adapter', onProgress) : undefined;
    const a = new StreamAligner(await pkg.Session.create(base, adapter, gpu), upstream.remote, pkg);
    // The session falls back to the CPU when WebGPU fails to start: the notice follows the backend.
    a.notice = a.backend === 'webgpu' ? null : notice ?? 'WebGPU could not be started here: running on the CPU in WebAssembly (slower).';
    return a;
  }

  /** Why the CPU runs instead of WebGPU, or null on WebGPU. */
  notice = null;

  /** 'webgpu', or 'cpu' when WebGPU is unavailable. */
  get backend() {
    return this.#session.backend;
  }

  /** How many threads run the CPU kernels (1 on WebGPU, and where the page is not cross-origin isolated). */
  get threads() {
    return this.backend === 'cpu' ? this.#pkg.kernelThreads() : 1;
  }

  /** 'remote' when a remote upstream was given, else 'local'. */
  get upstream() {
    return this.#remote ? 'remote' : 'local';
  }

  /** Runs one answer; resolves to { text, events, stop }. Events also go to `onEvent` and listeners. */
  async #run(query, options, onEvent) {
    const { signal, upstream = this.upstream, ...rest } = options;
    if (upstream === 'remote' && !this.#remote) throw new Error('no remote upstream was given to load()');
    if (upstream === 'remote') rest.remote = this.#remote;
    return this.#cancellable(signal, async (cancel) => {
      const json = await this.#session.run(query, JSON.stringify(rest), (e) => {
        const ev = toEvent(e);
        onEvent?.(ev);
        this.dispatchEvent(new CustomEvent('sentence', { detail: ev }));
      }, cancel);
      const a = JSON.parse(json);
      return { text: a.text, events: a.events.map((e) => toEvent(JSON.stringify(e))), stop: a.stop };
    });
  }

  /** `work(cancel)` with a Cancel that `signal` triggers; an abort rejects with an AbortError. */
  async #cancellable(signal, work) {
    if (signal?.aborted) throw new DOMException('aborted', 'AbortError');
    const cancel = new this.#pkg.Cancel();
    const abort = () => cancel.cancel();
    signal?.addEventListener('abort', abort, { once: true });
    try {
      return await work(cancel);
    } catch (e) {
      if (signal?.aborted) throw new DOMException('aborted', 'AbortError');
      throw e instanceof Error ? e : new Error(String(e));
    } finally {
      signal?.removeEventListener('abort', abort);
      cancel.free();
    }
  }

  /** The answer to `query`, sentence by sentence as each is corrected. */
  async *stream(query, { maxRounds, maxSentences, maxTokens, calculator, copyMargin, repair, resample, sampleTemperature, signal, upstream, mode = 'stream' } = {}) {
    const queue = [];
    let wake = () => {};
    let finished = false;
    let failure;
    this.#run(query, { mode, maxRounds, maxSentences, maxTokens, calculator, copyMargin, repair, resample, sampleTemperature, signal, upstream }, (ev) => {
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

  /**
   * One sentence corrected after `prefix` (the corrected text before it): what an extension
   * rewriting a message as it streams into a page needs. Resolves to { text, changed }.
   */
  correctSentence(query, prefix, sentence, { calculator = true, signal } = {}) {
    return this.#cancellable(signal, async (cancel) => {
      const r = JSON.parse(await this.#session.correctSentence(query, prefix, sentence, calculator, cancel));
      return { text: r.text, changed: r.changed };
    });
  }

  /**
   * The upstream model's greedy continuation of `prompt` as it is (no chat template). Resolves
   * to { text, promptTokens, generatedTokens, prefillMs, decodeMs }.
   */
  generate(prompt, { maxTokens = 128, signal } = {}) {
    return this.#cancellable(signal, async (cancel) => {
      const { text, stats } = JSON.parse(await this.#session.generate(prompt, maxTokens, cancel));
      return { text, promptTokens: stats.prompt_tokens, generatedTokens: stats.generated_tokens,
        prefillMs: stats.prefill_ms, decodeMs: stats.decode_ms };
    });
  }

  /**
   * The complete sentences of `text`, split as the sentence loop splits them; unless
   * `finished`, a last sentence whose end is not yet certain is left out. Needs `load()` first.
   */
  static splitSentences(text, finished = false) {
    if (!loaded) throw new Error('StreamAligner.splitSentences: load() first');
    return loaded.splitSentences(text, finished);
  }

  /**
   * The largest gap between the CPU path's SIMD kernels and their scalar definition, relative
   * to each product's scale (about 1e-7 when they agree); `wasm` as in `load()`.
   */
  static async kernelSelfCheck({ wasm } = {}) {
    return (await singlePackage(wasm)).kernelSelfCheck();
  }

  /**
   * Post-hoc correction of a complete answer (what an extension rewriting output needs). Each
   * sentence's event goes to `onEvent` and to 'sentence' listeners, as in `stream`.
   */
  correct(query, answer, { maxSentences, calculator, copyMargin, repair, signal, onEvent } = {}) {
    return this.#run(query, { mode: 'posthoc', answer, maxSentences, calculator, copyMargin, repair, signal }, onEvent);
  }
}
