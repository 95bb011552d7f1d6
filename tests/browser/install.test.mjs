// The npm packages as a web developer meets them: `npm pack` (www/pack.sh), installed from the
// tarball into a scratch project, imported from its node_modules in Chromium to correct a
// sentence, and the shipped TypeScript types checked with tsc against a usage file (and a
// misuse that must fail).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync, spawnSync } from 'node:child_process';
import { mkdirSync, rmSync, writeFileSync, existsSync, mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { chromium } from 'playwright-core';
import { serve } from './serve.mjs';

const root = new URL('../../', import.meta.url).pathname;
const tsc = join(root, 'tests/browser/node_modules/.bin/tsc');

const USAGE = `import { StreamAligner, type SentenceEvent } from 'PKG';
import { StreamAlignerWorker } from 'PKG/worker';

export async function main(): Promise<string> {
  const a = await StreamAligner.load({
    aligner: { base: '/m.gguf', adapter: '/a.safetensors' }, webgpu: false,
    onProgress: (p) => console.log(p.what, p.loaded, p.total, p.cached),
  });
  const seen: SentenceEvent[] = [];
  for await (const ev of a.stream('q', { maxRounds: 2, calculator: true })) seen.push(ev);
  const one: { text: string; changed: boolean } = await a.correctSentence('q', '', 'A.');
  const parts: string[] = StreamAligner.splitSentences('A. B.', true);
  const w = await StreamAlignerWorker.load({ aligner: { base: '/m.gguf' } });
  w.terminate();
  const backend: 'webgpu' | 'cpu' = a.backend;
  return one.text + parts.join('') + backend + seen.length;
}
`;
const MISUSE = `import { StreamAligner } from 'PKG';
export async function main(): Promise<number> {
  const a = await StreamAligner.load({ webgpu: 'no' });
  return (await a.correctSentence('q', '', 'A.')).text;
}
`;

function typecheck(dir, file, source) {
  writeFileSync(join(dir, file), source);
  return spawnSync(tsc, ['--noEmit', '--strict', '--module', 'nodenext', '--moduleResolution', 'nodenext',
    '--target', 'es2022', '--lib', 'es2022,dom,dom.iterable', file], { cwd: dir, encoding: 'utf8' });
}

test('the packages install from their tarballs, import in Chromium and type-check', { timeout: 900_000 }, async (t) => {
  for (const v of ['webgpu', 'cpu']) {
    const pkg = v === 'cpu' ? 'www/pkg-cpu' : 'www/pkg';
    if (!existsSync(join(root, pkg, 'stream_aligner_bg.wasm'))) { t.skip(`build ${pkg} first (bash www/build.sh ${v})`); return; }
  }
  const scratch = join(root, 'target/npm-scratch');
  rmSync(scratch, { recursive: true, force: true });
  mkdirSync(scratch, { recursive: true });
  writeFileSync(join(scratch, 'package.json'), JSON.stringify({ name: 'scratch', private: true, type: 'module' }));
  for (const v of ['webgpu', 'cpu']) {
    const out = execFileSync('bash', [join(root, 'www/pack.sh'), v], { cwd: root, encoding: 'utf8' });
    t.diagnostic(out.trim());
    const tgz = out.split(':')[0];
    execFileSync('npm', ['install', '--no-audit', '--no-fund', join(root, tgz)], { cwd: scratch, stdio: 'pipe' });
  }
  for (const name of ['stream-aligner', 'stream-aligner-cpu']) {
    const ok = typecheck(scratch, `usage-${name}.ts`, USAGE.replaceAll('PKG', name));
    assert.equal(ok.status, 0, `${name}: ${ok.stdout}${ok.stderr}`);
    const bad = typecheck(scratch, `misuse-${name}.ts`, MISUSE.replaceAll('PKG', name));
    assert.notEqual(bad.status, 0, `${name}: the misuse type-checked`);
    assert.match(bad.stdout + bad.stderr, /webgpu|boolean/);
  }
  writeFileSync(join(scratch, 'index.html'), `<!doctype html><meta charset="utf-8"><script type="module">
    import { StreamAligner } from './node_modules/stream-aligner-cpu/stream-aligner.js';
    window.aligner = StreamAligner;
  </script>`);

  const server = await serve(0);
  const ctx = await chromium.launchPersistentContext(mkdtempSync(join(tmpdir(), 'sa-install-')), {
    executablePath: process.env.CHROMIUM ?? '/usr/bin/chromium', headless: false,
    args: ['--headless=new', '--no-sandbox', '--no-first-run', '--disable-background-networking', '--disable-component-update'],
  });
  try {
    const page = await ctx.newPage();
    await page.goto(`http://127.0.0.1:${server.address().port}/target/npm-scratch/index.html`);
    await page.waitForFunction(() => window.aligner, null, { timeout: 30_000 });
    const r = await page.evaluate(async () => {
      const a = await window.aligner.load({ aligner: { base: '/models/SmolLM2-135M-Instruct.Q4_1.gguf', adapter: '/models/aligner/lora/adapter.safetensors' }, webgpu: false });
      const prefix = 'Mia has 12 apples. She buys 5 more, so 12 + 5 = 17 apples.';
      const fixed = await a.correctSentence('Mia has 12 apples. She buys 5 more and then gives away 3. How many apples does she have?', prefix, ' She gives away 3, so 17 - 3 = 15 apples are left.');
      return { backend: a.backend, fixed, split: window.aligner.splitSentences('It is 3.5 m. Next one', false) };
    });
    assert.equal(r.backend, 'cpu');
    assert.match(r.fixed.text, /17 - 3 = 14/, JSON.stringify(r));
    assert.equal(r.fixed.changed, true);
    assert.deepEqual(r.split, ['It is 3.5 m.']);
  } finally {
    await ctx.close();
    server.close();
  }
});
