// The extension's settings, in chrome.storage.local: shared by the content script (as a
// classic script it reads DEFAULTS from its own copy), the service worker and the options page.
export const DEFAULTS = {
  enabled: true,
  // Common chat UIs mark assistant turns this way; the options page changes it.
  selector: '[data-message-author-role="assistant"]',
  userSelector: '[data-message-author-role="user"]',
  calculator: true,
};

export async function settings() {
  return { ...DEFAULTS, ...(await chrome.storage.local.get(Object.keys(DEFAULTS))) };
}
