// The service worker: the toolbar toggle, and the go-between for content scripts and the
// offscreen document that holds the aligner (a service worker cannot run the wasm model for
// long, an offscreen document can).
import { settings } from './settings.js';

async function showState() {
  const { enabled } = await settings();
  await chrome.action.setBadgeText({ text: enabled ? '' : 'off' });
  await chrome.action.setTitle({ title: `Stream Aligner: ${enabled ? 'on (click to turn off)' : 'off (click to turn on)'}` });
}

chrome.runtime.onInstalled.addListener(showState);
chrome.runtime.onStartup.addListener(showState);
chrome.storage.onChanged.addListener((changes) => { if ('enabled' in changes) showState(); });

chrome.action.onClicked.addListener(async () => {
  const { enabled } = await settings();
  await chrome.storage.local.set({ enabled: !enabled });
});

let creating = null;
async function offscreen() {
  if (await chrome.offscreen.hasDocument()) return;
  creating ??= chrome.offscreen.createDocument({
    url: 'offscreen.html',
    reasons: ['WORKERS'],
    justification: 'runs the aligner model (wasm) that corrects assistant messages',
  }).finally(() => { creating = null; });
  await creating;
}

chrome.runtime.onMessage.addListener((msg, _sender, reply) => {
  if (msg?.target !== 'background') return false;
  (async () => {
    await offscreen();
    return chrome.runtime.sendMessage({ ...msg, target: 'offscreen' });
  })().then(reply, (e) => reply({ error: String(e?.message ?? e) }));
  return true;
});
