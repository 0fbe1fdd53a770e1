// interp_bench: runCode('1+1') round trip of @e2b/code-interpreter on a warm
// context, printed as BenchmarkRun JSON lines and a table.
//
//   node bench/interp_bench.mjs [--n 200] [--json out.jsonl] [--direct-only]
//
// Clock: runCode('1+1') called -> its Execution returned (POST /execute, the
// kernel's execute_request and the whole NDJSON stream), after 20 warm-up runs.
//   direct    coppice-interp on the host, loopback, SDK in debug mode with sandboxUrl
//   gateway   through coppiced's one port into a code-interpreter-v1 sandbox
//             (root only; a fresh state dir; everything made is removed)
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { spawn, execFileSync } from 'node:child_process';
import { pct, summary, hostInfo } from './stats.mjs';
import { startGateway, gatewaySkipReason, freePort, buildDir, TEST_API_KEY } from '../tests/e2e/lib/harness.mjs';

const args = process.argv.slice(2);
const arg = (name, dflt) => (args.includes(name) ? args[args.indexOf(name) + 1] : dflt);
const N = Number(arg('--n', 200));
const jsonOut = arg('--json', null);
const directOnly = args.includes('--direct-only');
const interpBin = process.env.COPPICE_INTERP || path.join(buildDir, 'coppice-interp');
const python = '/usr/bin/python3';
if (!fs.existsSync(interpBin)) {
  console.error(`interp_bench: cannot run: missing ${interpBin}`);
  process.exit(77);
}
const { Sandbox } = await import('../tests/e2e/node_modules/@e2b/code-interpreter/dist/index.mjs');

const host = hostInfo;
const command = `node bench/interp_bench.mjs${args.length ? ' ' + args.join(' ') : ''}`;

async function measure(sbx) {
  for (let i = 0; i < 20; i++) {
    const r = await sbx.runCode('1+1');
    if (r.text !== '2') throw new Error(`warm-up: ${JSON.stringify(r)}`);
  }
  const samples = [];
  let failures = 0;
  for (let i = 0; i < N; i++) {
    const t = performance.now();
    try {
      const r = await sbx.runCode('1+1');
      if (r.text !== '2') throw new Error(JSON.stringify(r));
      samples.push(performance.now() - t);
    } catch (e) {
      failures++;
      if (failures < 3) console.error(String(e));
    }
  }
  return { samples, failures };
}

const results = [];
const record = (config, r) => results.push({ config, host: host(), metric: "runCode('1+1') round trip", concurrency: 1,
  samples: r.samples.map((x) => +x.toFixed(3)), summary: summary(r.samples, r.failures), command, runAt: new Date().toISOString() });

// Direct: the server alone on the host.
{
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'coppice-interp-bench-'));
  const port = await freePort();
  const proc = spawn(interpBin, ['--host', '127.0.0.1', '--port', String(port), '--python', python, '--cwd', dir,
    '--runtime-dir', dir, '--log-level', 'warn'], { stdio: ['ignore', 'inherit', 'inherit'] });
  try {
    execFileSync(interpBin, ['--probe', String(port), '--probe-timeout', '60']);
    const sbx = await Sandbox.create({ debug: true, sandboxUrl: `http://127.0.0.1:${port}`, apiKey: 'e2b_' + '0'.repeat(40) });
    record('coppice-interp direct (host loopback, warm default context)', await measure(sbx));
  } finally {
    proc.kill('SIGTERM');
    await new Promise((r) => proc.on('exit', r));
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

// Through the gateway, when this machine can run one.
const why = directOnly ? '--direct-only' : gatewaySkipReason();
if (why) {
  console.error(`interp_bench: gateway run skipped: ${why}`);
} else {
  const gw = await startGateway({ extraArgs: process.env.COPPICE_INTERP ? ['--interp', interpBin] : [] });
  let sbx;
  try {
    const templates = path.join(gw.stateDir, 'templates');
    const dir = path.join(templates, 'code-interpreter-v1');
    fs.mkdirSync(dir);
    execFileSync('cp', ['-a', path.join(templates, 'base', 'rootfs'), path.join(dir, 'rootfs')]);
    const interpDir = path.dirname(fs.realpathSync(interpBin));
    fs.mkdirSync(path.join(dir, 'rootfs', interpDir), { recursive: true });
    let toml = fs.readFileSync(path.join(templates, 'base', 'template.toml'), 'utf8');
    toml = toml.replace(/^ro_binds = \[(.*)\]$/m, (m, list) => `ro_binds = [${list}, ${JSON.stringify(interpDir)}]`);
    const bin = `$( [ -x /.coppice/interp ] && echo /.coppice/interp || echo ${path.join(interpDir, path.basename(interpBin))} )`;
    toml += `start_cmd = ${JSON.stringify(`exec ${bin} --port 49999`)}\nready_cmd = ${JSON.stringify(`${bin} --probe 49999 --probe-timeout 5`)}\n`;
    fs.writeFileSync(path.join(dir, 'template.toml'), toml);
    await fetch(`${gw.url}/templates/reload`, { method: 'POST', headers: { 'X-API-KEY': TEST_API_KEY } });
    const t = performance.now();
    sbx = await Sandbox.create(gw.opts);
    const first = await sbx.runCode('1+1');
    const createToFirst = performance.now() - t;
    if (first.text !== '2') throw new Error(JSON.stringify(first));
    record('coppice-interp via gateway (code-interpreter-v1 sandbox, warm default context)', await measure(sbx));
    results.push({ config: 'code-interpreter-v1 create -> first runCode(1+1) (one sample)', host: host(), metric: 'create+first runCode',
      concurrency: 1, samples: [+createToFirst.toFixed(3)], summary: summary([createToFirst]), command, runAt: new Date().toISOString() });
  } finally {
    try { await sbx?.kill(); } catch {}
    await gw.stop();
  }
}

for (const r of results) console.log(JSON.stringify(r));
if (jsonOut) fs.writeFileSync(jsonOut, results.map((r) => JSON.stringify(r)).join('\n') + '\n');
console.log(`\n${'clock'.padEnd(84)} ${['n', 'fail', 'min', 'p50', 'p95', 'p99', 'max'].map((h) => h.padStart(8)).join(' ')}  (ms)`);
for (const r of results) {
  const s = r.summary;
  console.log(`${r.config.padEnd(84)} ${[s.count, s.failures].map((x) => String(x).padStart(8)).join(' ')} ${[s.min, s.p50, s.p95, s.p99, s.max].map((x) => x.toFixed(2).padStart(8)).join(' ')}`);
}
