// The content script: finds assistant messages (a CSS selector, see the options page), follows
// them while they stream in (MutationObserver), sends their text to the extension's aligner
// and rewrites each changed sentence in place: marked, with its original shown on hover. Turned
// off (the toolbar button), it touches nothing, and what it had changed is put back.
(() => {
  const DEFAULTS = {
    enabled: true,
    selector: '[data-message-author-role="assistant"]',
    userSelector: '[data-message-author-role="user"]',
    calculator: true,
  };
  const BLOCKS = new Set(['P', 'DIV', 'LI', 'UL', 'OL', 'BR', 'H1', 'H2', 'H3', 'H4', 'H5', 'H6', 'PRE', 'BLOCKQUOTE', 'TR', 'TABLE', 'SECTION', 'ARTICLE']);
  const IDLE_MS = 1500;
  let settings = { ...DEFAULTS };
  let observer = null;
  let style = null;
  let serial = 0;
  const state = new Map(); // element -> { key, decided, busy, again, idle }

  /** The text the page wrote into `el`: our spans stand for their originals; blocks break lines. */
  function pageText(el) {
    let out = '';
    const walk = (n) => {
      if (n.nodeType === Node.TEXT_NODE) { out += n.data; return; }
      if (n.nodeType !== Node.ELEMENT_NODE) return;
      if (n.dataset.saOriginal !== undefined) { out += n.dataset.saOriginal; return; }
      if (BLOCKS.has(n.tagName) && out && !/\s$/.test(out)) out += '\n';
      for (const c of n.childNodes) walk(c);
    };
    walk(el);
    return out;
  }

  /** The user's message this answer replies to: the last one before it in the page. */
  function question(el) {
    let q = null;
    for (const u of document.querySelectorAll(settings.userSelector)) {
      if (u.compareDocumentPosition(el) & Node.DOCUMENT_POSITION_FOLLOWING) q = u;
    }
    return (q?.innerText ?? q?.textContent ?? document.title ?? '').trim() || document.title || 'the question';
  }

  /** Wraps the first unwrapped occurrence of the sentence in `el` in a marked span. */
  function mark(el, d) {
    const target = d.original.trim();
    const walker = document.createTreeWalker(el, NodeFilter.SHOW_TEXT, {
      acceptNode: (n) => (n.parentElement?.closest('[data-sa-original]') ? NodeFilter.FILTER_REJECT : NodeFilter.FILTER_ACCEPT),
    });
    for (let n = walker.nextNode(); n; n = walker.nextNode()) {
      const at = n.data.indexOf(target);
      if (at < 0) continue;
      const hit = n.splitText(at);
      hit.splitText(target.length);
      const span = document.createElement('span');
      span.className = 'stream-aligner-changed';
      span.dataset.saOriginal = target;
      span.title = `Original: ${target}`;
      span.textContent = d.corrected.trim();
      hit.replaceWith(span);
      return true;
    }
    return false; // across formatting, or the page re-rendered without it: left as written
  }

  /** Our changes to `el` made (again, if the page re-rendered them away), without seeing them. */
  function apply(el, st) {
    const marked = [...el.querySelectorAll('[data-sa-original]')].map((s) => `${s.dataset.saOriginal}\u0000${s.textContent}`);
    const changed = st.decided.filter((d) => d.changed);
    const want = changed.map((d) => `${d.original.trim()}\u0000${d.corrected.trim()}`);
    if (marked.length === want.length && marked.every((m, i) => m === want[i])) return;
    for (const s of el.querySelectorAll('[data-sa-original]')) s.replaceWith(document.createTextNode(s.dataset.saOriginal));
    // Pages that stream a word at a time leave a text node per word: join them first.
    el.normalize();
    for (const d of changed) mark(el, d);
    observer?.takeRecords();
  }

  async function check(el, finished) {
    const st = state.get(el);
    if (!st || !settings.enabled) return;
    // Busy: check again when done, as finished if either asked for it (the idle timer fires once).
    if (st.busy) { st.again = finished || st.again === 'finished' ? 'finished' : 'more'; return; }
    st.busy = true;
    try {
      const r = await chrome.runtime.sendMessage({
        target: 'background', type: 'align', key: st.key, query: question(el), text: pageText(el), finished, calculator: settings.calculator,
      });
      if (r?.error) console.warn(`stream-aligner: ${r.error}`);
      else if (r && settings.enabled) { st.decided = r.decided; apply(el, st); }
    } catch (e) {
      console.warn(`stream-aligner: ${e.message ?? e}`);
    } finally {
      st.busy = false;
    }
    if (st.again) {
      const f = st.again === 'finished';
      st.again = false;
      check(el, f);
    }
  }

  function touched(el) {
    if (!state.has(el)) state.set(el, { key: `m${serial++}-${Date.now()}`, decided: [], busy: false, again: false, idle: 0 });
    const st = state.get(el);
    clearTimeout(st.idle);
    // A message that stopped changing is finished: its last sentence needs no lookahead.
    st.idle = setTimeout(() => check(el, true), IDLE_MS);
    apply(el, st);
    check(el, false);
  }

  function scan(nodes) {
    const found = new Set();
    for (const n of nodes) {
      const e = n.nodeType === Node.ELEMENT_NODE ? n : n.parentElement;
      if (!e) continue;
      const m = e.closest(settings.selector);
      if (m) found.add(m);
      if (n.nodeType === Node.ELEMENT_NODE) for (const x of n.querySelectorAll(settings.selector)) found.add(x);
    }
    for (const m of found) touched(m);
  }

  function start() {
    if (observer) return;
    style = document.createElement('style');
    style.textContent = `
      .stream-aligner-changed { background: rgba(255, 214, 0, 0.25); border-bottom: 1px dashed #b58900; position: relative; }
      .stream-aligner-changed:hover::after {
        content: "Original: " attr(data-sa-original); position: absolute; left: 0; top: 1.6em; z-index: 2147483647;
        background: #222; color: #fff; font: 12px/1.4 system-ui, sans-serif; padding: 4px 8px; border-radius: 4px;
        white-space: normal; width: max-content; max-width: 32em; }`;
    document.head.append(style);
    observer = new MutationObserver((records) => {
      scan(records.flatMap((r) => [r.target, ...r.addedNodes]));
    });
    observer.observe(document.body, { childList: true, subtree: true, characterData: true });
    scan([document.body]);
  }

  function stop() {
    observer?.disconnect();
    observer = null;
    for (const [el, st] of state) {
      clearTimeout(st.idle);
      for (const s of el.querySelectorAll('[data-sa-original]')) s.replaceWith(document.createTextNode(s.dataset.saOriginal));
      el.normalize();
    }
    state.clear();
    style?.remove();
    style = null;
  }

  chrome.storage.local.get(Object.keys(DEFAULTS)).then((s) => {
    settings = { ...DEFAULTS, ...s };
    if (settings.enabled) start();
  });
  chrome.storage.onChanged.addListener((changes) => {
    for (const [k, { newValue }] of Object.entries(changes)) if (k in DEFAULTS) settings[k] = newValue ?? DEFAULTS[k];
    if (settings.enabled) start(); else stop();
  });
})();
