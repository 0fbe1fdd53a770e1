// sdk_bench: commands.run('true') through the real E2B SDK against
// coppice-envd (debug mode, loopback TCP), next to a bare fetch of /health on
// the same envd, so the SDK's own cost shows apart from envd's.
//
//   node bench/sdk_bench.mjs [N]      (COPPICE_BUILD_DIR=build by default)
import { startEnvd, debugSandbox } from '../tests/e2e/lib/harness.mjs';

const n = Number(process.argv[2] || 300);
const pct = (v, p) => {
  const s = [...v].sort((a, b) => a - b);
  const i = (p / 100) * (s.length - 1);
  const lo = Math.floor(i), hi = Math.min(lo + 1, s.length - 1);
  return s[lo] + (s[hi] - s[lo]) * (i - lo);
};
const summary = (v) => ({ count: v.length, min: Math.min(...v), avg: v.reduce((a, b) => a + b, 0) / v.length,
  p50: pct(v, 50), p95: pct(v, 95), p99: pct(v, 99), max: Math.max(...v), unit: 'ms' });

const envd = await startEnvd();
try {
  const sbx = await debugSandbox();
  for (let i = 0; i < 30; i++) { await sbx.commands.run('true'); await fetch(`${envd.url}/health`); }
  const run = [], health = [];
  for (let i = 0; i < n; i++) {
    let t = performance.now();
    await sbx.commands.run('true');
    run.push(performance.now() - t);
    t = performance.now();
    await fetch(`${envd.url}/health`);
    health.push(performance.now() - t);
  }
  const rows = [['SDK commands.run("true")', summary(run)], ['fetch GET /health (loopback floor)', summary(health)]];
  for (const [config, s] of rows) {
    console.log(JSON.stringify({ config, metric: 'exec round trip', concurrency: 1, summary: s, command: `node bench/sdk_bench.mjs ${n}`, runAt: new Date().toISOString() }));
  }
  console.log(`${''.padEnd(40)} ${['min', 'p50', 'p95', 'p99', 'max'].map((h) => h.padStart(8)).join(' ')}  (ms, n=${n})`);
  for (const [config, s] of rows) console.log(`${config.padEnd(40)} ${[s.min, s.p50, s.p95, s.p99, s.max].map((x) => x.toFixed(3).padStart(8)).join(' ')}`);
} finally {
  await envd.stop();
}
