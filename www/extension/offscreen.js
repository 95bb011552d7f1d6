// The offscreen document: holds the aligner (the CPU wasm build, the model and adapter shipped
// inside the extension) and corrects the sentences content scripts send, one message at a time.
import { StreamAligner } from './stream-aligner.js';

let loading = null;
const aligner = () => (loading ??= StreamAligner.load({
  aligner: {
    base: chrome.runtime.getURL('models/SmolLM2-135M-Instruct.Q4_1.gguf'),
    adapter: chrome.runtime.getURL('models/adapter.safetensors'),
  },
  webgpu: false,
}).catch((e) => { loading = null; throw e; }));

// Per message (keyed by the content script): the sentences decided so far.
const messages = new Map();
let queue = Promise.resolve();

/** The sentences of `text` not yet decided, decided now: [{ original, corrected, changed }]. */
async function align({ key, query, text, finished, calculator }) {
  const a = await aligner();
  const state = messages.get(key) ?? { decided: [], prefix: '' };
  messages.set(key, state);
  const sentences = StreamAligner.splitSentences(text, finished);
  // The page may have re-rendered from the start: decided sentences must still lead the text.
  const same = state.decided.every((d, i) => sentences[i] === d.original);
  if (!same) {
    state.decided = [];
    state.prefix = '';
  }
  const fresh = [];
  for (const original of sentences.slice(state.decided.length)) {
    if (!original.trim()) continue;
    const { text: corrected, changed } = await a.correctSentence(query, state.prefix, original, { calculator });
    const lead = original.slice(0, original.length - original.trimStart().length);
    const d = { original, corrected: changed ? lead + corrected.trim() : original, changed };
    state.decided.push(d);
    state.prefix += d.corrected;
    fresh.push(d);
  }
  return { decided: state.decided, fresh };
}

chrome.runtime.onMessage.addListener((msg, _sender, reply) => {
  if (msg?.target !== 'offscreen') return false;
  if (msg.type === 'align') {
    // One correction at a time: the model is single-threaded.
    const run = queue.then(() => align(msg));
    queue = run.catch(() => {});
    run.then(reply, (e) => reply({ error: String(e?.message ?? e) }));
    return true;
  }
  return false;
});
