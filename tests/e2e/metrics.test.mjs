// GET /metrics on a real gateway: Prometheus text format 0.0.4, no API key,
// figures that follow a create, a command through the proxy and a kill, and
// no sandbox id anywhere in the exposition. Needs root.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { startGateway, gatewaySkipReason, loadSdk, sdkName, TEST_API_KEY } from './lib/harness.mjs';

const skip = gatewaySkipReason();
const opt = skip ? { skip } : {};
let gw, Sandbox;
before(async () => {
  if (skip) return;
  gw = await startGateway();
  Sandbox = (await loadSdk()).Sandbox;
});
after(async () => { await gw?.stop(); });

// Parses the text exposition strictly enough to catch format mistakes:
// every comment is # HELP or # TYPE, every other line is
// `name{labels} value` (labels optional), and every sample belongs to a
// family that has both a HELP and a TYPE line. Returns
// { families: Map(name -> {help, type}), samples: [{name, labels, value}] }.
function parseExposition(text) {
  const families = new Map();
  const samples = [];
  const fam = (n) => families.get(n) || families.set(n, {}).get(n);
  assert.ok(text.endsWith('\n'), 'exposition ends with a newline');
  for (const line of text.split('\n')) {
    if (line === '') continue;
    if (line.startsWith('#')) {
      const m = /^# (HELP|TYPE) ([a-zA-Z_:][a-zA-Z0-9_:]*) (.*)$/.exec(line);
      assert.ok(m, `malformed comment line: ${line}`);
      if (m[1] === 'HELP') fam(m[2]).help = m[3];
      else {
        assert.match(m[3], /^(counter|gauge|histogram|summary|untyped)$/, line);
        fam(m[2]).type = m[3];
      }
      continue;
    }
    const m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$/.exec(line);
    assert.ok(m, `malformed sample line: ${line}`);
    const labels = {};
    if (m[2] !== undefined && m[2] !== '') {
      const re = /([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"(,|$)/y;
      let at = 0;
      while (at < m[2].length) {
        re.lastIndex = at;
        const l = re.exec(m[2]);
        assert.ok(l, `malformed labels: ${line}`);
        labels[l[1]] = l[2].replace(/\\(.)/g, (_, c) => (c === 'n' ? '\n' : c));
        at = re.lastIndex;
      }
    }
    const value = m[3] === '+Inf' ? Infinity : m[3] === '-Inf' ? -Infinity : Number(m[3]);
    assert.ok(!Number.isNaN(value) || m[3] === 'NaN', `bad value: ${line}`);
    samples.push({ name: m[1], labels, value });
  }
  for (const s of samples) {
    let f = families.get(s.name);
    if (!f) {
      const base = s.name.replace(/_(bucket|sum|count)$/, '');
      f = families.get(base);
      assert.equal(f?.type, 'histogram', `${s.name} has no family of its own and is not part of a histogram`);
    }
    assert.ok(f.help !== undefined && f.type !== undefined, `${s.name}: family without HELP or TYPE`);
  }
  return { families, samples };
}

// The value of the one sample `name` whose labels include `labels`.
function value(parsed, name, labels = {}) {
  const hits = parsed.samples.filter((s) => s.name === name &&
    Object.entries(labels).every(([k, v]) => s.labels[k] === v));
  assert.equal(hits.length, 1, `${name} ${JSON.stringify(labels)}: ${hits.length} samples`);
  return hits[0].value;
}

async function scrape() {
  const r = await fetch(`${gw.url}/metrics`);  // deliberately without an API key
  assert.equal(r.status, 200);
  const type = r.headers.get('content-type');
  assert.match(type, /^text\/plain/);
  assert.match(type, /version=0\.0\.4/);
  const text = await r.text();
  return { text, ...parseExposition(text) };
}

test(`[${sdkName}] /metrics follows a create, a command and a kill`, opt, async () => {
  const before = await scrape();
  for (const [name, type] of [['coppice_sandboxes', 'gauge'], ['coppice_create_seconds', 'histogram'],
    ['coppice_create_failures_total', 'counter'], ['coppice_pool_available', 'gauge'],
    ['coppice_pool_in_use', 'gauge'], ['coppice_checkout_ns_sum', 'counter'], ['coppice_checkouts_total', 'counter'],
    ['coppice_proxy_requests_total', 'counter'], ['coppice_proxy_bytes_total', 'counter'],
    ['coppice_proxy_errors_total', 'counter'], ['coppice_envd_errors_total', 'counter'],
    ['coppice_http_requests_total', 'counter'], ['coppice_host_spares_ready', 'gauge']]) {
    assert.equal(before.families.get(name)?.type, type, name);
  }
  assert.equal(value(before, 'coppice_pool_available', { template: 'base' }), 0);
  assert.equal(value(before, 'coppice_create_seconds_bucket', { pool: 'miss', le: '+Inf' }),
    value(before, 'coppice_create_seconds_count', { pool: 'miss' }));

  const sbx = await Sandbox.create('base', { ...gw.opts, metadata: { secret: 'do-not-export' } });
  let killed = false;
  try {
    const r = await sbx.commands.run('echo metrics-through-the-proxy');
    assert.equal(r.stdout.trim(), 'metrics-through-the-proxy');

    const mid = await scrape();
    assert.equal(value(mid, 'coppice_sandboxes', { state: 'running' }),
      value(before, 'coppice_sandboxes', { state: 'running' }) + 1);
    assert.ok(value(mid, 'coppice_create_seconds_count', { pool: 'miss' }) >
      value(before, 'coppice_create_seconds_count', { pool: 'miss' }));
    assert.ok(value(mid, 'coppice_create_seconds_sum', { pool: 'miss' }) > 0);
    assert.equal(value(mid, 'coppice_create_seconds_count', { pool: 'hit' }), 0);
    // Buckets are cumulative and end at the count.
    const buckets = mid.samples.filter((s) => s.name === 'coppice_create_seconds_bucket' && s.labels.pool === 'miss');
    assert.equal(buckets.at(-1).labels.le, '+Inf');
    for (let i = 1; i < buckets.length; i++) assert.ok(buckets[i].value >= buckets[i - 1].value);
    assert.equal(buckets.at(-1).value, value(mid, 'coppice_create_seconds_count', { pool: 'miss' }));
    assert.ok(value(mid, 'coppice_proxy_requests_total', { port_kind: 'envd' }) >
      value(before, 'coppice_proxy_requests_total', { port_kind: 'envd' }));
    assert.ok(value(mid, 'coppice_proxy_bytes_total', { direction: 'in' }) >
      value(before, 'coppice_proxy_bytes_total', { direction: 'in' }));
    assert.ok(value(mid, 'coppice_proxy_bytes_total', { direction: 'out' }) >
      value(before, 'coppice_proxy_bytes_total', { direction: 'out' }));
    assert.ok(value(mid, 'coppice_http_requests_total', { code_class: '2xx' }) >
      value(before, 'coppice_http_requests_total', { code_class: '2xx' }));
    assert.ok(!mid.text.includes(sbx.sandboxId), 'the exposition names no sandbox');
    assert.ok(!mid.text.includes('do-not-export'), 'the exposition carries no metadata');

    // A request without a key is a counted 4xx.
    assert.equal((await fetch(`${gw.url}/v2/sandboxes`)).status, 401);
    // A proxied request for a sandbox that does not exist is a counted 502.
    const missing = await fetch(`${gw.url}/health`, { headers: { 'E2b-Sandbox-Id': 'a'.repeat(20) } });
    assert.equal(missing.status, 502);
    await missing.text();
    const errs = await scrape();
    assert.equal(value(errs, 'coppice_http_requests_total', { code_class: '4xx' }),
      value(mid, 'coppice_http_requests_total', { code_class: '4xx' }) + 1);
    assert.equal(value(errs, 'coppice_proxy_errors_total', { reason: 'not_found' }),
      value(mid, 'coppice_proxy_errors_total', { reason: 'not_found' }) + 1);

    assert.equal(await sbx.kill(), true);
    killed = true;
    const after = await scrape();
    assert.equal(value(after, 'coppice_sandboxes', { state: 'running' }),
      value(mid, 'coppice_sandboxes', { state: 'running' }) - 1);
    assert.equal(value(after, 'coppice_create_failures_total'), value(before, 'coppice_create_failures_total'));
  } finally {
    if (!killed) await sbx.kill().catch(() => {});
  }
});

test('/metrics needs no key but other endpoints still do', opt, async () => {
  const r = await fetch(`${gw.url}/metrics`, { headers: { 'X-API-KEY': 'wrong' } });
  assert.equal(r.status, 200);
  await r.text();
  const list = await fetch(`${gw.url}/v2/sandboxes`, { headers: { 'X-API-KEY': 'wrong' } });
  assert.equal(list.status, 401);
  const ok = await fetch(`${gw.url}/v2/sandboxes`, { headers: { 'X-API-KEY': TEST_API_KEY } });
  assert.equal(ok.status, 200);
});
