// Prefill and decode speed of the CPU path in Debian's headless Chromium, against wllama
// (llama.cpp compiled to wasm, npm `@wllama/wllama`, a dev dependency used only here): the same
// GGUF, the same prompt, greedy, the same number of threads, measured side by side in one run
// (under load the figures move together). Both run in Web Workers on a cross-origin isolated
// page (tests/browser/serve.mjs sends COOP/COEP): ours in StreamAlignerWorker (with more than one
// thread, the threads package: rayon's pool over wasm threads), wllama in its own worker (its
// pthreads build). Each side's own timings: ours from `generate`, wllama's from llama.cpp's
// (`timings` of its completion).
//
//   node tests/browser/bench.mjs [--json] [--reps 3] [--gen 64] [--threads 2]
//
// Needs the www/ packages built (bash www/build.sh; bash www/build.sh threads) and the model
// fetched. Prints medians, and the ratio ours ÷ wllama (above 1.0: we are faster).
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { chromium } from 'playwright-core';
import { serve } from './serve.mjs';

const { values: opts } = parseArgs({
  options: {
    json: { type: 'boolean', default: false },
    reps: { type: 'string', default: '3' },
    gen: { type: 'string', default: '64' },
    threads: { type: 'string', default: '2' },
  },
});
const reps = Number(opts.reps);
const gen = Number(opts.gen);
const threads = Number(opts.threads);
const MODEL = '/models/SmolLM2-135M-Instruct.Q4_1.gguf';
const WLLAMA = '/tests/browser/node_modules/@wllama/wllama/esm';
// A 38-token prompt (the chat template around one question), as TOOLCHAIN.md's wllama figures.
const PROMPT = '<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n'
  + '<|im_start|>user\nWrite a short story about a lighthouse keeper.<|im_end|>\n<|im_start|>assistant\n';

const server = await serve(0);
const origin = `http://127.0.0.1:${server.address().port}`;
const profile = mkdtempSync(join(tmpdir(), 'sa-bench-'));
const browser = await chromium.launchPersistentContext(profile, {
  executablePath: process.env.CHROMIUM ?? '/usr/bin/chromium',
  headless: false,
  args: ['--headless=new', '--no-sandbox', '--disable-quic', '--no-first-run',
    '--disable-background-networking', '--disable-component-update', '--disable-sync'],
});
try {
  const page = await browser.newPage();
  page.on('pageerror', (e) => console.error('page error:', e.message));
  await page.goto(`${origin}/tests/browser/bench.html`);
  const runs = await page.evaluate(async ({ model, wllamaDir, prompt, gen, reps, threads }) => {
    const { StreamAlignerWorker } = await import('/www/stream-aligner-worker.js');
    const { Wllama } = await import(`${wllamaDir}/index.js`);
    const ours = await StreamAlignerWorker.load({ aligner: { base: model }, webgpu: false, threads });
    const wllama = new Wllama({ default: `${wllamaDir}/wasm/wllama.wasm` });
    await wllama.loadModelFromUrl(new URL(model, location.href).href, { n_threads: threads, n_ctx: 512, n_gpu_layers: 0, useCache: false });
    const out = { ours: [], wllama: [], threads: { ours: ours.threads, wllama: wllama.getNumThreads() },
      isolated: crossOriginIsolated };
    const oursOnce = async (n) => {
      const g = await ours.generate(prompt, { maxTokens: n });
      return {
        prefill_tok_s: g.promptTokens / (g.prefillMs / 1e3),
        decode_tok_s: (g.generatedTokens - 1) / (g.decodeMs / 1e3),
        tokens: g.generatedTokens, text: g.text,
      };
    };
    const wllamaOnce = async (n) => {
      const r = await wllama.createCompletion({ prompt, max_tokens: n, temperature: 0 });
      const t = r.timings;
      return {
        prefill_tok_s: t.prompt_per_second, decode_tok_s: t.predicted_per_second,
        tokens: t.predicted_n, text: r.choices[0].text,
      };
    };
    await oursOnce(4); // warm-up: compile, first-touch of the weights
    await wllamaOnce(4);
    for (let i = 0; i < reps; i++) {
      out.ours.push(await oursOnce(gen));
      out.wllama.push(await wllamaOnce(gen));
    }
    ours.terminate();
    return out;
  }, { model: MODEL, wllamaDir: WLLAMA, prompt: PROMPT, gen, reps, threads });
  // Same thread counts, or the comparison means nothing.
  if (runs.threads.ours !== threads || runs.threads.wllama !== threads) {
    throw new Error(`asked for ${threads} threads, ran ours on ${runs.threads.ours} and wllama on ${runs.threads.wllama} (isolated: ${runs.isolated})`);
  }
  const median = (xs) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
  const summary = (rs) => ({
    decode_tok_s: median(rs.map((r) => r.decode_tok_s)),
    prefill_tok_s: median(rs.map((r) => r.prefill_tok_s)),
  });
  const result = {
    ours: summary(runs.ours),
    wllama: summary(runs.wllama),
    threads,
    reps,
    gen_tokens: gen,
    same_text: runs.ours[0].text === runs.wllama[0].text,
  };
  result.ratio = {
    decode: result.ours.decode_tok_s / result.wllama.decode_tok_s,
    prefill: result.ours.prefill_tok_s / result.wllama.prefill_tok_s,
  };
  if (opts.json) {
    console.log(JSON.stringify(result));
  } else {
    const f = (x) => x.toFixed(1).padStart(8);
    console.log(`headless Chromium, CPU, ${threads} thread${threads > 1 ? 's' : ''} each, ${gen} tokens, median of ${reps}`);
    console.log('                      prefill tok/s   decode tok/s');
    console.log(`stream-aligner (wasm) ${f(result.ours.prefill_tok_s)}        ${f(result.ours.decode_tok_s)}`);
    console.log(`wllama (llama.cpp)    ${f(result.wllama.prefill_tok_s)}        ${f(result.wllama.decode_tok_s)}`);
    console.log(`ours ÷ wllama         ${f(result.ratio.prefill)}        ${f(result.ratio.decode)}`);
  }
} finally {
  await browser.close();
  server.close();
  rmSync(profile, { recursive: true, force: true });
}
