// The figures every benchmark program prints (benchmarks.md): percentiles by
// linear interpolation, a BenchmarkRun summary of samples in milliseconds,
// and the host the run was made on.
import fs from 'node:fs';
import os from 'node:os';

export const pct = (v, p) => {
  const s = [...v].sort((a, b) => a - b);
  if (!s.length) return 0;
  const i = (p / 100) * (s.length - 1);
  const lo = Math.floor(i), hi = Math.min(lo + 1, s.length - 1);
  return s[lo] + (s[hi] - s[lo]) * (i - lo);
};

export const summary = (v, failures = 0) => (v.length
  ? { count: v.length, failures, min: Math.min(...v), avg: v.reduce((a, b) => a + b, 0) / v.length, p50: pct(v, 50),
    p95: pct(v, 95), p99: pct(v, 99), max: Math.max(...v), unit: 'ms' }
  : { count: 0, failures, min: 0, avg: 0, p50: 0, p95: 0, p99: 0, max: 0, unit: 'ms' });

export const hostInfo = () => {
  let cpuinfo = '';
  try { cpuinfo = fs.readFileSync('/proc/cpuinfo', 'utf8'); } catch {}
  return { cpuModel: (cpuinfo.match(/model name\s*:\s*(.*)/) || [])[1], cpuCount: os.cpus().length,
    memGB: +(os.totalmem() / 2 ** 30).toFixed(2), kernel: os.release() };
};
