// The aligning gateway on edge runtimes: Deno and workerd (from npm) serve www/edge's fetch
// handler with the CPU-only wasm build, in front of our own `serve` (the real model) on
// 127.0.0.1. Each streams an aligned answer; a bad request gets an OpenAI-shaped error.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { createServer } from 'node:net';

const root = new URL('../../', import.meta.url).pathname;

const freePort = () => new Promise((ok) => {
  const s = createServer();
  s.listen(0, '127.0.0.1', () => { const { port } = s.address(); s.close(() => ok(port)); });
});

function started(proc, pattern, what) {
  return new Promise((ok, fail) => {
    let err = '';
    proc.stderr.on('data', (d) => { err += d; const m = err.match(pattern); if (m) ok(m[1]); });
    proc.on('exit', (code) => fail(new Error(`${what} exited (${code}): ${err}`)));
  });
}

async function until(fn, ms) {
  const end = Date.now() + ms;
  for (;;) {
    try { if (await fn()) return; } catch { /* not up yet */ }
    if (Date.now() > end) throw new Error(`not ready within ${ms} ms`);
    await new Promise((r) => setTimeout(r, 250));
  }
}

/** The SSE stream's data lines. */
async function sse(resp) {
  const text = await resp.text();
  return text.split('\n').filter((l) => l.startsWith('data: ')).map((l) => l.slice(6));
}

test('Deno and workerd stream an aligned answer from the edge build', { timeout: 900_000 }, async (t) => {
  const bin = process.env.STREAM_ALIGNER_BIN;
  if (!bin) { t.skip('set STREAM_ALIGNER_BIN to the built stream-aligner (tests/run.sh does)'); return; }
  const serveProc = spawn(bin, ['serve', '--addr', '127.0.0.1:0', '--name', 'smollm2', '--model', `${root}models/SmolLM2-135M-Instruct.Q4_1.gguf`]);
  try {
    const upstream = await started(serveProc, /on (http:\/\/127\.0\.0\.1:\d+\/v1)/, 'serve');
    for (const runtime of ['deno', 'workerd']) {
      const port = await freePort();
      const proc = spawn('bash', [`${root}www/edge/run.sh`, runtime, '--port', String(port), '--upstream', upstream, '--upstream-model', 'smollm2'], { detached: true });
      let log = '';
      proc.stderr.on('data', (d) => { log += d; });
      try {
        const base = `http://127.0.0.1:${port}`;
        await until(async () => (await fetch(`${base}/health`)).ok, 60_000);
        const bad = await fetch(`${base}/v1/chat/completions`, { method: 'POST', body: '{"messages": [' });
        assert.equal(bad.status, 400, runtime);
        assert.equal((await bad.json()).error.code, 'invalid_request', runtime);
        const resp = await fetch(`${base}/v1/chat/completions`, {
          method: 'POST',
          headers: { 'content-type': 'application/json' },
          body: JSON.stringify({ model: 'smollm2', stream: true, max_tokens: 120, stream_aligner: { details: true },
            messages: [{ role: 'user', content: 'Mia has 12 apples. She buys 5 more and then gives away 3. How many apples does she have?' }] }),
          signal: AbortSignal.timeout(600_000),
        });
        assert.equal(resp.status, 200, runtime);
        assert.match(resp.headers.get('content-type'), /text\/event-stream/);
        const data = await sse(resp);
        assert.equal(data.at(-1), '[DONE]', `${runtime}: ${data.join('\n')}\n${log}`);
        const chunks = data.slice(0, -1).map((d) => JSON.parse(d));
        assert.ok(chunks.every((c) => !c.error), `${runtime}: ${JSON.stringify(chunks)}\n${log}`);
        const sentences = chunks.filter((c) => c.choices[0].delta.content);
        assert.ok(sentences.length >= 2, `${runtime}: one chunk a sentence: ${JSON.stringify(chunks)}`);
        assert.equal(sentences[0].choices[0].delta.role, 'assistant');
        assert.ok(sentences.every((c) => typeof c.stream_aligner.original === 'string'), runtime);
        const last = chunks.at(-1);
        assert.equal(last.choices[0].finish_reason, 'stop', runtime);
        assert.ok(last.usage.upstream_requests >= 1 && last.usage.aligner_tokens > 0, JSON.stringify(last.usage));
        t.diagnostic(`${runtime}: ${sentences.map((c) => c.choices[0].delta.content).join('')}`);
      } finally {
        try { process.kill(-proc.pid, 'SIGTERM'); } catch { /* gone */ }
      }
    }
  } finally {
    serveProc.kill();
  }
});
