// interp_langs: per language of the code interpreter, the time to start a
// context and the round trip of a trivial run on it, through the gateway,
// side by side in one run. Printed as BenchmarkRun JSON lines and a table.
//
//   node bench/interp_langs.mjs --templates DIR [--n 100] [--starts 5] [--json out.jsonl]
//
// DIR is a templates root holding code-interpreter-v1, built once with
// `coppice template build templates/recipes/code-interpreter-v1.toml --templates DIR`
// (~11 min, 1.9 GiB). Root only; a fresh gateway state dir, removed after.
//
// Clocks (client side, @e2b/code-interpreter through coppiced's one port):
//   context start   createCodeContext({language}) called -> answered (the
//                   kernel is up and has answered)
//   round trip      runCode(<1+1 in the language>, {context}) called -> its
//                   Execution returned, after 10 warm-up runs on that context
import fs from 'node:fs';
import path from 'node:path';
import { summary, hostInfo } from './stats.mjs';
import { startGateway, gatewaySkipReason } from '../tests/e2e/lib/harness.mjs';

const args = process.argv.slice(2);
const arg = (name, dflt) => (args.includes(name) ? args[args.indexOf(name) + 1] : dflt);
const N = Number(arg('--n', 100));
const STARTS = Number(arg('--starts', 5));
const templates = arg('--templates', null);
const jsonOut = arg('--json', null);
const command = `node bench/interp_langs.mjs${args.length ? ' ' + args.join(' ') : ''}`;

if (!templates || !fs.existsSync(path.join(templates, 'code-interpreter-v1', 'template.toml'))) {
  console.error('interp_langs: cannot run: pass --templates DIR holding a built code-interpreter-v1 '
    + '(coppice template build templates/recipes/code-interpreter-v1.toml --templates DIR)');
  process.exit(77);
}
const why = gatewaySkipReason();
if (why) {
  console.error(`interp_langs: cannot run: ${why}`);
  process.exit(77);
}
const { Sandbox } = await import('../tests/e2e/node_modules/@e2b/code-interpreter/dist/index.mjs');

// What each language's run is, and what it answers (IRkernel's result is a
// display, not the main result, as on E2B: the first result's text).
const first = (r) => (r.results[0]?.text ?? '').trim();
const langs = [
  { language: 'python', code: '1+1', ok: (r) => first(r) === '2' },
  { language: 'javascript', code: '1+1', ok: (r) => first(r) === '2' },
  { language: 'typescript', code: '1+1', ok: (r) => first(r) === '2' },
  { language: 'r', code: '1+1', ok: (r) => first(r) === '[1] 2' },
  { language: 'java', code: '1+1', ok: (r) => first(r) === '2' },
  { language: 'bash', code: 'echo $((1+1))', ok: (r) => r.logs.stdout.join('').trim() === '2' },
];

const results = [];
const record = (config, metric, samples, failures = 0) => results.push({ config, host: hostInfo(), metric, concurrency: 1,
  samples: samples.map((x) => +x.toFixed(3)), summary: summary(samples, failures), command, runAt: new Date().toISOString() });

const gw = await startGateway({ extraArgs: ['--templates', path.resolve(templates)] });
let sbx;
try {
  sbx = await Sandbox.create({ ...gw.opts, timeoutMs: 3_600_000 });
  for (const l of langs) {
    const starts = [];
    let ctx;
    for (let i = 0; i < STARTS; i++) {
      const t = performance.now();
      const c = await sbx.createCodeContext({ language: l.language });
      starts.push(performance.now() - t);
      if (ctx) await sbx.removeCodeContext(ctx);
      ctx = c;
    }
    record(`${l.language}: context start`, 'createCodeContext', starts);
    for (let i = 0; i < 10; i++) {
      const r = await sbx.runCode(l.code, { context: ctx });
      if (!l.ok(r)) throw new Error(`${l.language} warm-up: ${JSON.stringify(r)}`);
    }
    const trips = [];
    let failures = 0;
    for (let i = 0; i < N; i++) {
      const t = performance.now();
      try {
        const r = await sbx.runCode(l.code, { context: ctx });
        if (!l.ok(r)) throw new Error(JSON.stringify(r));
        trips.push(performance.now() - t);
      } catch (e) {
        if (++failures < 3) console.error(`${l.language}: ${e}`);
      }
    }
    record(`${l.language}: runCode(${JSON.stringify(l.code)})`, 'runCode round trip', trips, failures);
    await sbx.removeCodeContext(ctx);
  }
} finally {
  try { await sbx?.kill(); } catch {}
  await gw.stop();
}

for (const r of results) console.log(JSON.stringify(r));
if (jsonOut) fs.writeFileSync(jsonOut, results.map((r) => JSON.stringify(r)).join('\n') + '\n');
const load = fs.readFileSync('/proc/loadavg', 'utf8').split(' ').slice(0, 3).join(' ');
console.log(`\n${'clock (through the gateway; load ' + load + ')'.padEnd(0)}`.padEnd(50)
  + ` ${['n', 'fail', 'min', 'p50', 'p95', 'p99', 'max'].map((h) => h.padStart(8)).join(' ')}  (ms)`);
for (const r of results) {
  const s = r.summary;
  console.log(`${r.config.padEnd(49)} ${[s.count, s.failures].map((x) => String(x).padStart(8)).join(' ')} ${[s.min, s.p50, s.p95, s.p99, s.max].map((x) => x.toFixed(2).padStart(8)).join(' ')}`);
}
