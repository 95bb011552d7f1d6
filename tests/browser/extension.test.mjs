// The browser extension (target/extension, built by www/extension/build.sh) loaded into
// Debian's Chromium: a local page streams an assistant message with a wrong step into
// [data-message-author-role="assistant"]; the step is corrected in place and marked, with the
// original on hover (a screenshot is saved); turned off, the page's text is the page's own.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createServer } from 'node:http';
import { mkdtempSync, existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { chromium } from 'playwright-core';

const root = new URL('../../', import.meta.url).pathname;
const ext = join(root, 'target/extension');

const ANSWER = 'Mia starts with 12 apples. She buys 5 more, so 12 + 5 = 17 apples. '
  + 'She gives away 3, so 17 - 3 = 15 apples are left. The answer is 15.';
const PAGE = `<!doctype html><html><head><meta charset="utf-8"><title>A chat</title>
<style>body { font: 16px system-ui, sans-serif; max-width: 46em; margin: 2em; } div { margin: 1em 0; padding: 0.8em; border-radius: 8px; }
[data-message-author-role=user] { background: #eef; } [data-message-author-role=assistant] { background: #f6f6f6; }</style></head><body>
<div data-message-author-role="user">Mia has 12 apples. She buys 5 more and then gives away 3. How many apples does she have?</div>
<div data-message-author-role="assistant" id="answer"></div>
<script>
  const words = ${JSON.stringify(ANSWER)}.split(/(?<= )/);
  let i = 0;
  const t = setInterval(() => {
    document.getElementById('answer').append(words[i++]);
    if (i === words.length) { clearInterval(t); window.streamed = true; }
  }, 40);
</script></body></html>`;

test('the extension rewrites a wrong step in place, shows the original on hover, and stays off when off', { timeout: 900_000 }, async (t) => {
  if (!existsSync(join(ext, 'manifest.json'))) { t.skip('build it first: bash www/extension/build.sh (tests/run.sh does)'); return; }
  const server = createServer((req, res) => {
    res.writeHead(200, { 'content-type': 'text/html' });
    res.end(PAGE);
  });
  await new Promise((ok) => server.listen(0, '127.0.0.1', ok));
  const url = `http://127.0.0.1:${server.address().port}/chat`;
  const ctx = await chromium.launchPersistentContext(mkdtempSync(join(tmpdir(), 'sa-ext-')), {
    executablePath: process.env.CHROMIUM ?? '/usr/bin/chromium',
    headless: false,
    args: ['--headless=new', '--no-sandbox', `--disable-extensions-except=${ext}`, `--load-extension=${ext}`,
      '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync'],
  });
  try {
    // The extension's service worker (it may have started before we look).
    let worker = ctx.serviceWorkers()[0];
    for (let i = 0; !worker && i < 120; i++) {
      await new Promise((r) => setTimeout(r, 250));
      worker = ctx.serviceWorkers()[0];
    }
    assert.ok(worker, 'the extension loaded (its service worker runs)');
    const page = await ctx.newPage();
    const errors = [];
    page.on('pageerror', (e) => errors.push(e.message));
    await page.goto(url);
    // Every sentence decided (the last once the message stops changing): the wrong step and
    // the wrong answer it led to are rewritten.
    await page.waitForFunction(() => window.streamed
      && document.querySelectorAll('[data-sa-original]').length >= 2
      && !document.getElementById('answer').textContent.includes('15'), null, { timeout: 600_000, polling: 500 });
    const marked = await page.$$eval('[data-sa-original]', (xs) => xs.map((x) => ({ now: x.textContent, was: x.dataset.saOriginal, title: x.title })));
    t.diagnostic(JSON.stringify(marked));
    const step = marked.find((m) => m.was.includes('17 - 3 = 15'));
    assert.ok(step, `the wrong step is marked: ${JSON.stringify(marked)}`);
    assert.match(step.now, /17 - 3 = 14/);
    assert.equal(step.title, `Original: ${step.was}`);
    const text = await page.textContent('#answer');
    assert.ok(text.startsWith('Mia starts with 12 apples.'), text);
    assert.match(text, /The answer is 14\.$/);
    // The original shows on hover.
    await page.hover('[data-sa-original]');
    const tip = await page.$eval('[data-sa-original]', (x) => getComputedStyle(x, '::after').content);
    assert.match(tip, /Original: .*= 15/);
    await page.screenshot({ path: join(root, 'target/extension-test.png') });
    assert.deepEqual(errors, []);

    // The toolbar toggle (its storage key): off puts the page's own text back ...
    await worker.evaluate(() => chrome.storage.local.set({ enabled: false }));
    await page.waitForFunction(() => document.querySelectorAll('[data-sa-original]').length === 0, null, { timeout: 10_000 });
    assert.equal(await page.textContent('#answer'), ANSWER);
    // ... and a page streamed while off is left byte-identical.
    await page.reload();
    await page.waitForFunction(() => window.streamed, null, { timeout: 30_000 });
    await page.waitForTimeout(2500);
    assert.equal(await page.$eval('#answer', (a) => a.innerHTML), ANSWER);
    assert.equal(await page.$$eval('style', (s) => s.length), 1, 'no style injected');
  } finally {
    await ctx.close();
    server.close();
  }
});
