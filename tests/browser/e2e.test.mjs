// The browser build end to end in Debian's headless Chromium (playwright-core, never a
// downloaded browser): the demo page with the real model, and the JavaScript API's errors.
// Run by tests/run.sh after www/build.sh; `node --test tests/browser/`.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, mkdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { spawn } from 'node:child_process';
import { createServer } from 'node:http';
import { chromium } from 'playwright-core';
import { serve } from './serve.mjs';

const ARGS = ['--headless=new', '--no-sandbox', '--enable-unsafe-webgpu', '--disable-quic',
  '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync'];
let server, browser, noGpu, origin;

const launch = (args) => chromium.launchPersistentContext(mkdtempSync(join(tmpdir(), 'sa-chromium-')), {
  executablePath: process.env.CHROMIUM ?? '/usr/bin/chromium', headless: false, args,
});

before(async () => {
  server = await serve(0);
  origin = `http://127.0.0.1:${server.address().port}`;
  browser = await launch(ARGS);
  // Without --enable-unsafe-webgpu, Chromium here offers no WebGPU adapter: the CPU fallback.
  noGpu = await launch(ARGS.filter((a) => a !== '--enable-unsafe-webgpu'));
});

after(async () => {
  await browser?.close();
  await noGpu?.close();
  server?.close();
});

async function page(context = browser) {
  const p = await context.newPage();
  p.errors = [];
  p.on('pageerror', (e) => p.errors.push(e.message));
  // The browser logs every 404 (the deliberate ones too): those are not errors of ours.
  p.on('console', (m) => {
    if (m.type() === 'error' && !m.text().startsWith('Failed to load resource')) p.errors.push(m.text());
  });
  return p;
}

test('without WebGPU, the demo answers a word problem sentence by sentence on the CPU', { timeout: 600_000 }, async (t) => {
  const p = await page(noGpu);
  assert.equal(await p.evaluate(async () => !!(await navigator.gpu?.requestAdapter())), false);
  await p.goto(`${origin}/www/index.html?maxSentences=3`);
  await p.waitForFunction(() => window.demo.backend || window.demo.error, null, { timeout: 120_000 });
  assert.equal(await p.evaluate(() => window.demo.error), null);
  assert.equal(await p.evaluate(() => window.demo.backend), 'cpu');
  assert.match(await p.textContent('#notice'), /WebGPU is not available/);
  // The CPU path's SIMD128 kernels against their scalar definition, where they run.
  const gap = await p.evaluate(async () => (await import('/www/stream-aligner.js')).StreamAligner.kernelSelfCheck());
  assert.ok(gap < 1e-5, `SIMD128 kernels vs scalar: ${gap}`);
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
  const sum = (k) => demo.events.reduce((a, e) => a + e[k], 0);
  t.diagnostic(`CPU (wasm): load ${demo.loadMs.toFixed(0)} ms; upstream ${(sum('upstreamTokens') / sum('upstreamMs') * 1e3).toFixed(2)} tok/s `
    + `(prefill included), aligner ${sum('alignerMs').toFixed(0)} ms for ${sum('alignerTokens')} tokens`);
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
  assert.deepEqual(await p.evaluate(() => window.demo.sources), { 'base model': 'cache', adapter: 'cache' }, 'and the page says so');
  await p.close();
});

test('a software WebGPU adapter (SwiftShader) gets the CPU with a notice; forced, our WebGPU kernels continue a prompt as the CPU does', { timeout: 600_000 }, async (t) => {
  const p = await page();
  await p.goto(`${origin}/www/stream-aligner.js`);
  const r = await p.evaluate(async () => {
    const { StreamAligner } = await import('/www/stream-aligner.js');
    const aligner = { base: '/models/SmolLM2-135M-Instruct.Q4_1.gguf', adapter: '/models/aligner/lora/adapter.safetensors' };
    const byDefault = await StreamAligner.load({ aligner });
    const onCpu = await byDefault.generate('The capital of France is', { maxTokens: 4 });
    const t0 = performance.now();
    const a = await StreamAligner.load({ aligner, webgpu: 'force' });
    const loadMs = performance.now() - t0;
    // The first run compiles the shaders; the second is timed.
    const first = await a.generate('The capital of France is', { maxTokens: 4 });
    const onGpu = await a.generate('The capital of France is', { maxTokens: 4 });
    return { chosen: byDefault.backend, notice: byDefault.notice, backend: a.backend, loadMs,
      cpu: onCpu.text, first: first.text, gpu: onGpu.text, prefillMs: onGpu.prefillMs, decodeMs: onGpu.decodeMs,
      generated: onGpu.generatedTokens };
  });
  assert.equal(r.chosen, 'cpu');
  assert.match(r.notice, /software renderer/);
  assert.equal(r.backend, 'webgpu');
  // Our kernels run in WGSL on Chromium's WebGPU and agree with the CPU's greedy continuation
  // (four tokens: the fifth is a near tie that the CPU's 8-bit activations flip; the f32 paths
  // and numpy agree with WebGPU there, see tests/engine.rs).
  assert.match(r.gpu, /Paris/, JSON.stringify(r));
  assert.equal(r.gpu, r.cpu);
  assert.equal(r.first, r.gpu);
  t.diagnostic(`WebGPU (SwiftShader): load ${r.loadMs.toFixed(0)} ms; 5-token prompt ${r.prefillMs.toFixed(0)} ms, ${r.generated} tokens ${r.decodeMs.toFixed(0)} ms`);
  assert.deepEqual(p.errors, []);
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
    // The operation repair runs in wasm too: a step its quantities rule out becomes the
    // operation that fits which the aligner scores likeliest (tests/align.rs, natively).
    out.repaired = (await a.correctSentence(
      'Ana saves 15 dollars a week for 8 weeks, then spends 47 dollars on a jacket. How much money does she have left?',
      'To solve this problem, we need to calculate the total amount of money Ana has left after 8 weeks and then subtract the amount she spent on the jacket.',
      'Ana saves 15 dollars a week for 8 weeks, so she saves 15 + 8 = 23 dollars.')).text;
    // resample: a step whose correction does not hold up (GSM8K's Tim: "3 * 5 = 15" takes a 5
    // the question never gives, and no repair mends it) is drawn again from the upstream,
    // sampled; the event keeps the upstream's sentence as its original and carries the
    // correction kept.
    const tim = 'Tim buys 3 dozen eggs.  Eggs cost $.50 each.  How much did he pay for eggs?';
    const first = async (options) => {
      const evs = [];
      for await (const ev of a.stream(tim, { calculator: true, maxSentences: 1, ...options })) evs.push(ev);
      return evs[0];
    };
    out.plain = await first({});
    out.resampled = await first({ resample: 3 });
    out.resampleMode = await msg(async () => { for await (const _ of a.stream(tim, { mode: 'upstream', resample: 2 })) { /* nothing */ } });
    const fixed = await a.correct('What is 2 + 3?', 'The answer is 5.');
    out.posthoc = fixed.events.length;
    out.stop = fixed.stop;
    // The worker's correct() sends the same 'sentence' events as the page's.
    const { StreamAlignerWorker } = await import('/www/stream-aligner-worker.js');
    const w = await StreamAlignerWorker.load({ aligner: { base: '/models/SmolLM2-135M-Instruct.Q4_1.gguf',
      adapter: '/models/aligner/lora/adapter.safetensors' }, webgpu: false });
    const workerSeen = [];
    w.addEventListener('sentence', (e) => workerSeen.push(e.detail.corrected));
    const viaWorker = await w.correct('What is 2 + 3?', 'The answer is 5. It is 2 + 3.');
    w.terminate();
    out.workerSeen = workerSeen;
    out.workerEvents = viaWorker.events.map((e) => e.corrected);
    return out;
  });
  assert.match(result.badModel, /base model: .*nope\.gguf answered HTTP 404/);
  assert.match(result.notGguf, /GGUF|magic/i);
  assert.match(result.badAdapter, /adapter: .*missing\.safetensors answered HTTP 404/);
  assert.match(result.noBase, /base model URL/);
  assert.match(result.empty, /empty/);
  assert.match(result.aborted, /AbortError/);
  assert.equal(result.seen, 1, 'no sentence after the abort');
  assert.match(result.repaired, /15 \* 8 = 120/);
  assert.equal(result.resampled.original, result.plain.original, JSON.stringify([result.plain, result.resampled]));
  assert.notEqual(result.resampled.corrected, result.plain.corrected, 'the drawn step replaced the one that did not hold up');
  assert.match(result.resampleMode, /resample is for mode 'stream'/);
  assert.equal(result.posthoc, 1);
  assert.equal(result.stop, 'finished');
  assert.equal(result.workerEvents.length, 2);
  assert.deepEqual(result.workerSeen, result.workerEvents, 'the worker sent every sentence event');
  assert.deepEqual(p.errors, []);
  await p.close();
});

/** An OpenAI-compatible server that streams one sentence, then fails every request with a 500. */
function failingUpstream() {
  let calls = 0;
  const server = createServer((req, res) => {
    const cors = { 'access-control-allow-origin': '*', 'access-control-allow-headers': '*', 'access-control-allow-methods': 'POST' };
    if (req.method === 'OPTIONS') { res.writeHead(204, cors).end(); return; }
    req.resume();
    req.on('end', () => {
      calls += 1;
      if (calls > 1) { res.writeHead(500, cors).end('the upstream broke'); return; }
      res.writeHead(200, { ...cors, 'content-type': 'text/event-stream' });
      for (const t of ['Mia has 12 apples', '. ', 'Then']) {
        res.write(`data: ${JSON.stringify({ choices: [{ text: t, finish_reason: null }] })}\n\n`);
      }
      res.end();
    });
  });
  return new Promise((ok) => server.listen(0, '127.0.0.1', () => ok(server)));
}

test('a remote upstream over fetch: our serve answers; a failing one rejects clearly', { timeout: 600_000 }, async (t) => {
  const bin = process.env.STREAM_ALIGNER_BIN;
  if (!bin) { t.skip('set STREAM_ALIGNER_BIN to the built stream-aligner (tests/run.sh does)'); return; }
  const serveProc = spawn(bin, ['serve', '--addr', '127.0.0.1:0', '--model', new URL('../../models/SmolLM2-135M-Instruct.Q4_1.gguf', import.meta.url).pathname]);
  const failing = await failingUpstream();
  try {
    const url = await new Promise((ok, fail) => {
      let err = '';
      serveProc.stderr.on('data', (d) => { err += d; const m = err.match(/on (http:\/\/127\.0\.0\.1:\d+\/v1)/); if (m) ok(m[1]); });
      serveProc.on('exit', (code) => fail(new Error(`serve exited (${code}): ${err}`)));
    });
    const p = await page();
    await p.goto(`${origin}/www/index.html?webgpu=0&worker=0&maxSentences=2&remote=${encodeURIComponent(url)}`);
    await p.waitForFunction(() => window.demo.backend || window.demo.error, null, { timeout: 120_000 });
    assert.equal(await p.inputValue('#upstream'), 'remote');
    await p.click('#go');
    await p.waitForFunction(() => window.demo.done, null, { timeout: 480_000 });
    const demo = await p.evaluate(() => window.demo);
    assert.equal(demo.error, null);
    assert.ok(demo.events.length >= 1, 'sentences arrived from the remote upstream');
    assert.ok(demo.events.every((e) => e.upstreamTokens > 0), 'the upstream streamed them');

    const failUrl = `http://127.0.0.1:${failing.address().port}/v1`;
    const out = await p.evaluate(async (failUrl) => {
      const { StreamAligner } = await import('/www/stream-aligner.js');
      const a = await StreamAligner.load({ aligner: { base: '/models/SmolLM2-135M-Instruct.Q4_1.gguf',
        adapter: '/models/aligner/lora/adapter.safetensors' }, upstream: { remote: { baseUrl: failUrl } }, webgpu: false });
      const events = [];
      try {
        for await (const ev of a.stream('Mia has 12 apples. How many?', { maxSentences: 4 })) events.push(ev.original);
        return { events, error: null };
      } catch (e) {
        return { events, error: e.message };
      }
    }, failUrl);
    assert.deepEqual(out.events, ['Mia has 12 apples.'], 'the first sentence arrived before the failure');
    assert.match(out.error, /HTTP 500.*the upstream broke/);
    await p.close();
  } finally {
    serveProc.kill();
    failing.close();
  }
});

test('on a cross-origin isolated page the CPU kernels run on wasm threads and continue a prompt as one thread does', { timeout: 600_000 }, async (t) => {
  const prompt = 'The capital of France is';
  const run = (p) => p.evaluate(async (prompt) => {
    const { StreamAligner } = await import('/www/stream-aligner.js');
    const { StreamAlignerWorker } = await import('/www/stream-aligner-worker.js');
    const aligner = { base: '/models/SmolLM2-135M-Instruct.Q4_1.gguf' };
    // In a worker (as the demo runs the CPU path): its thread sleeps while the pool works.
    const w = await StreamAlignerWorker.load({ aligner, webgpu: false });
    const threaded = await w.generate(prompt, { maxTokens: 8 });
    const threads = w.threads;
    w.terminate();
    const one = await StreamAligner.load({ aligner, webgpu: false, threads: 1 });
    const single = await one.generate(prompt, { maxTokens: 8 });
    return { isolated: crossOriginIsolated, cores: navigator.hardwareConcurrency, threads, oneThread: one.threads,
      threaded: threaded.text, single: single.text, decodeMs: [threaded.decodeMs, single.decodeMs] };
  }, prompt);

  const p = await page();
  await p.goto(`${origin}/www/stream-aligner.js`);
  const r = await run(p);
  assert.equal(r.isolated, true, 'serve.mjs sends COOP/COEP');
  assert.equal(r.threads, Math.max(1, r.cores), JSON.stringify(r));
  assert.ok(r.threads > 1 || r.cores === 1, `${r.threads} threads on ${r.cores} cores`);
  assert.equal(r.oneThread, 1);
  // The rows of each product are split between threads, each row computed as on one thread:
  // the same bits, so the same greedy tokens.
  assert.match(r.single, /Paris/, JSON.stringify(r));
  assert.equal(r.threaded, r.single);
  t.diagnostic(`${r.threads} threads: 7 tokens decoded in ${r.decodeMs[0].toFixed(0)} ms; one thread ${r.decodeMs[1].toFixed(0)} ms`);
  assert.deepEqual(p.errors, []);
  await p.close();

  // Without COOP/COEP there is no SharedArrayBuffer: one thread, the same text.
  const plain = await serve(0, { isolated: false });
  try {
    const q = await page();
    await q.goto(`http://127.0.0.1:${plain.address().port}/www/stream-aligner.js`);
    const s = await run(q);
    assert.equal(s.isolated, false);
    assert.equal(s.threads, 1);
    assert.equal(s.threaded, r.single);
    assert.deepEqual(q.errors, []);
    await q.close();
  } finally {
    plain.close();
  }
});
