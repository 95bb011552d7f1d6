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
  const state = messages.get(key) ?? { decided: [], prefix: '', text: '' };
  messages.set(key, state);
  // A last sentence decided at a pause (its end not certain) is decided again if more came.
  if (text !== state.text) {
    while (state.decided.at(-1)?.tentative) {
      const d = state.decided.pop();
      state.prefix = state.prefix.slice(0, state.prefix.length - d.corrected.length);
    }
  }
  state.text = text;
  // The decided sentences must still lead the text (else the page re-rendered it otherwise
  // from the start); only what follows them is split.
  let done = state.decided.map((d) => d.original).join('');
  if (!text.startsWith(done)) {
    state.decided = [];
    state.prefix = '';
    done = '';
  }
  const rest = text.slice(done.length);
  const sentences = StreamAligner.splitSentences(rest, finished);
  const certain = finished ? StreamAligner.splitSentences(rest, false).length : sentences.length;
  const fresh = [];
  for (const [i, original] of sentences.entries()) {
    if (!original.trim()) continue;
    const { text: corrected, changed } = await a.correctSentence(query, state.prefix, original, { calculator });
    const lead = original.slice(0, original.length - original.trimStart().length);
    const d = { original, corrected: changed ? lead + corrected.trim() : original, changed, tentative: i >= certain };
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
