// The browser build end to end in Debian's headless Chromium (playwright-core, never a
// downloaded browser): the demo page with the real model, and the JavaScript API's errors.
// Run by tests/run.sh after www/build.sh; `node --test tests/browser/`.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, mkdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { chromium } from 'playwright-core';
import { serve } from './serve.mjs';

const ARGS = ['--headless=new', '--no-sandbox', '--enable-unsafe-webgpu', '--disable-quic',
  '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync'];
let server, browser, origin;

before(async () => {
  server = await serve(0);
  origin = `http://127.0.0.1:${server.address().port}`;
  browser = await chromium.launchPersistentContext(mkdtempSync(join(tmpdir(), 'sa-chromium-')), {
    executablePath: process.env.CHROMIUM ?? '/usr/bin/chromium', headless: false, args: ARGS,
  });
});

after(async () => {
  await browser?.close();
  server?.close();
});

async function page() {
  const p = await browser.newPage();
  p.errors = [];
  p.on('pageerror', (e) => p.errors.push(e.message));
  // The browser logs every 404 (the deliberate ones too): those are not errors of ours.
  p.on('console', (m) => {
    if (m.type() === 'error' && !m.text().startsWith('Failed to load resource')) p.errors.push(m.text());
  });
  return p;
}

test('the demo answers a word problem sentence by sentence on the CPU fallback', { timeout: 600_000 }, async () => {
  const p = await page();
  await p.goto(`${origin}/www/index.html?webgpu=0&maxSentences=3`);
  await p.waitForFunction(() => window.demo.backend || window.demo.error, null, { timeout: 120_000 });
  assert.equal(await p.evaluate(() => window.demo.error), null);
  assert.equal(await p.evaluate(() => window.demo.backend), 'cpu');
  assert.match(await p.textContent('#notice'), /WebGPU is not available/);
  await p.click('#go');
  await p.waitForFunction(() => window.demo.done, null, { timeout: 540_000 });
  const demo = await p.evaluate(() => window.demo);
  assert.equal(demo.error, null);
  assert.ok(demo.events.length >= 1 && demo.events.length <= 3, `${demo.events.length} events`);
  for (const [i, ev] of demo.events.entries()) {
    assert.equal(ev.index, i);
    assert.equal(typeof ev.original, 'string');
    assert.equal(ev.changed, ev.corrected !== ev.original);
  }
  const answer = await p.textContent('#answer');
  assert.equal(answer, demo.events.map((e) => e.corrected).join(''));
  assert.equal(await p.locator('#rounds li').count(), demo.events.length);
  const shots = new URL('../../target/browser/', import.meta.url).pathname;
  mkdirSync(shots, { recursive: true });
  await p.screenshot({ path: `${shots}demo.png`, fullPage: true });
  assert.deepEqual(p.errors, []);

  // Reloading reads the weights from Cache Storage: nothing is downloaded again.
  const fetched = [];
  p.on('request', (r) => { if (/\.(gguf|safetensors)$/.test(r.url())) fetched.push(r.url()); });
  await p.reload();
  await p.waitForFunction(() => window.demo.backend || window.demo.error, null, { timeout: 120_000 });
  assert.match(await p.textContent('#status'), /Ready/);
  assert.deepEqual(fetched, [], 'weights come from the cache');
  await p.close();
});

test('the JavaScript API: bad URLs reject clearly, an abort stops the answer', { timeout: 300_000 }, async () => {
  const p = await page();
  await p.goto(`${origin}/www/stream-aligner.js`);  // same origin, no demo running
  const result = await p.evaluate(async () => {
    const { StreamAligner } = await import('/www/stream-aligner.js');
    const out = {};
    const msg = (f) => f().then(() => 'resolved', (e) => `${e.name}: ${e.message}`);
    out.badModel = await msg(() => StreamAligner.load({ aligner: { base: '/models/nope.gguf' }, webgpu: false }));
    out.notGguf = await msg(() => StreamAligner.load({ aligner: { base: '/www/index.html' }, webgpu: false }));
    out.badAdapter = await msg(() => StreamAligner.load({
      aligner: { base: '/models/SmolLM2-135M-Instruct.Q4_1.gguf', adapter: '/models/aligner/lora/missing.safetensors' }, webgpu: false }));
    out.noBase = await msg(() => StreamAligner.load({}));
    const a = await StreamAligner.load({ aligner: { base: '/models/SmolLM2-135M-Instruct.Q4_1.gguf',
      adapter: '/models/aligner/lora/adapter.safetensors' }, webgpu: false });
    out.empty = await msg(async () => { for await (const _ of a.stream('   ')) { /* nothing */ } });
    const ctl = new AbortController();
    const seen = [];
    a.addEventListener('sentence', (e) => seen.push(e.detail.index));
    const started = performance.now();
    out.aborted = await msg(async () => {
      for await (const ev of a.stream('Tell me a long story about a dragon.', { signal: ctl.signal, maxSentences: 20 })) {
        ctl.abort();
      }
    });
    out.abortMs = performance.now() - started;
    out.seen = seen.length;
    const fixed = await a.correct('What is 2 + 3?', 'The answer is 5.');
    out.posthoc = fixed.events.length;
    return out;
  });
  assert.match(result.badModel, /base model: .*nope\.gguf answered HTTP 404/);
  assert.match(result.notGguf, /GGUF|magic/i);
  assert.match(result.badAdapter, /adapter: .*missing\.safetensors answered HTTP 404/);
  assert.match(result.noBase, /base model URL/);
  assert.match(result.empty, /empty/);
  assert.match(result.aborted, /AbortError/);
  assert.equal(result.seen, 1, 'no sentence after the abort');
  assert.equal(result.posthoc, 1);
  assert.deepEqual(p.errors, []);
  await p.close();
});
