import { DEFAULTS, settings } from './settings.js';

const $ = (id) => document.getElementById(id);
const s = await settings();
$('enabled').checked = s.enabled;
$('calculator').checked = s.calculator;
$('selector').value = s.selector;
$('userSelector').value = s.userSelector;
$('save').addEventListener('click', async () => {
  const selector = $('selector').value.trim() || DEFAULTS.selector;
  const userSelector = $('userSelector').value.trim() || DEFAULTS.userSelector;
  for (const sel of [selector, userSelector]) {
    try { document.querySelector(sel); } catch { $('status').textContent = `not a valid selector: ${sel}`; return; }
  }
  await chrome.storage.local.set({ enabled: $('enabled').checked, calculator: $('calculator').checked, selector, userSelector });
  $('status').textContent = 'saved';
});
