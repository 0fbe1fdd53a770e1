// envd's wire behaviour for bad input and its access token, with raw HTTP.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import net from 'node:net';
import { startEnvd, debugSandbox, sdkName, ENVD_PORT } from './lib/harness.mjs';

const TOKEN = 'tok-' + Math.random().toString(36).slice(2);
let envd;
before(async () => { envd = await startEnvd({ token: TOKEN }); });
after(async () => { await envd?.stop(); });

const url = (p) => `${envd.url}${p}`;
const auth = { 'X-Access-Token': TOKEN };
function envelope(obj, flags = 0) {
  const body = Buffer.from(typeof obj === 'string' ? obj : JSON.stringify(obj));
  const head = Buffer.alloc(5);
  head[0] = flags;
  head.writeUInt32BE(body.length, 1);
  return Buffer.concat([head, body]);
}
function frames(buf) {
  const out = [];
  let off = 0;
  while (off + 5 <= buf.length) {
    const len = buf.readUInt32BE(off + 1);
    out.push({ flags: buf[off], json: JSON.parse(buf.subarray(off + 5, off + 5 + len).toString()) });
    off += 5 + len;
  }
  return out;
}

test(`[${sdkName}] health needs no token; other endpoints answer 401 JSON without it`, async () => {
  assert.equal((await fetch(url('/health'))).status, 204);
  const r = await fetch(url('/envs'));
  assert.equal(r.status, 401);
  assert.equal((await r.json()).code, 401);
  const rpc = await fetch(url('/process.Process/List'), { method: 'POST', headers: { 'content-type': 'application/json' }, body: '{}' });
  assert.equal(rpc.status, 401);
  assert.equal((await rpc.json()).code, 'unauthenticated');
  const ok = await fetch(url('/process.Process/List'), { method: 'POST', headers: { 'content-type': 'application/json', ...auth }, body: '{}' });
  assert.equal(ok.status, 200);
  assert.ok(Array.isArray((await ok.json()).processes));
});

test('the SDK without the token gets an AuthenticationError', async () => {
  const sbx = await debugSandbox();
  await assert.rejects(sbx.commands.run('true'), (err) => /AuthenticationError|unauthenticated|401/i.test(`${err.name} ${err.message}`));
});

test('/init again needs the current token', async () => {
  const r = await fetch(url('/init'), { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ accessToken: 'stolen' }) });
  assert.equal(r.status, 401);
  const r2 = await fetch(url('/init'), { method: 'POST', headers: { 'content-type': 'application/json', ...auth }, body: JSON.stringify({ envVars: { ADDED: '1' } }) });
  assert.equal(r2.status, 204);
  const envs = await (await fetch(url('/envs'), { headers: auth })).json();
  assert.equal(envs.ADDED, '1');
});

test('unknown method → 501 unimplemented; GET → 405; wrong content type → 415', async () => {
  const r = await fetch(url('/process.Process/Nope'), { method: 'POST', headers: { 'content-type': 'application/json', ...auth }, body: '{}' });
  assert.equal(r.status, 501);
  assert.equal((await r.json()).code, 'unimplemented');
  const g = await fetch(url('/process.Process/List'), { headers: auth });
  assert.equal(g.status, 405);
  const ct = await fetch(url('/process.Process/List'), { method: 'POST', headers: { 'content-type': 'application/proto', ...auth }, body: '' });
  assert.equal(ct.status, 415);
});

test('broken JSON and wrong types → invalid_argument', async () => {
  const r = await fetch(url('/process.Process/SendSignal'), { method: 'POST', headers: { 'content-type': 'application/json', ...auth }, body: '{"process":' });
  assert.equal(r.status, 400);
  assert.equal((await r.json()).code, 'invalid_argument');
  const t = await fetch(url('/process.Process/SendSignal'), { method: 'POST', headers: { 'content-type': 'application/json', ...auth }, body: '{"process":{"pid":"x"},"signal":"SIGNAL_SIGKILL"}' });
  assert.equal(t.status, 400);
  const nf = await fetch(url('/process.Process/SendSignal'), { method: 'POST', headers: { 'content-type': 'application/json', ...auth }, body: '{"process":{"pid":424242},"signal":"SIGNAL_SIGKILL"}' });
  assert.equal(nf.status, 404);
  assert.equal((await nf.json()).code, 'not_found');
});

test('malformed envelopes end the stream with invalid_argument, never hang', async () => {
  const h = { 'content-type': 'application/connect+json', ...auth };
  for (const body of [Buffer.from([0, 0, 0]), Buffer.from([0, 0, 0, 0, 9, 0x7b]), envelope('{}', 1), Buffer.concat([envelope({}), Buffer.from('x')]), envelope('not json')]) {
    const r = await fetch(url('/process.Process/Start'), { method: 'POST', headers: h, body, signal: AbortSignal.timeout(5000) });
    assert.equal(r.status, 200);
    const f = frames(Buffer.from(await r.arrayBuffer()));
    assert.equal(f.length, 1);
    assert.equal(f[0].flags, 2);
    assert.equal(f[0].json.error.code, 'invalid_argument');
  }
});

test('a stream of a started process: start, data, end, end-stream frame', async () => {
  const r = await fetch(url('/process.Process/Start'), { method: 'POST', headers: { 'content-type': 'application/connect+json', ...auth },
    body: envelope({ process: { cmd: '/bin/echo', args: ['hi'] }, stdin: false }) });
  assert.equal(r.headers.get('content-type'), 'application/connect+json');
  const f = frames(Buffer.from(await r.arrayBuffer()));
  assert.ok(f[0].json.event.start.pid > 0);
  assert.equal(Buffer.from(f[1].json.event.data.stdout, 'base64').toString(), 'hi\n');
  assert.deepEqual(f[2].json.event.end, { exited: true, status: 'exit status 0' });
  assert.deepEqual(f[3], { flags: 2, json: {} });
});

test('starting a missing program is an error in the end-stream frame', async () => {
  const r = await fetch(url('/process.Process/Start'), { method: 'POST', headers: { 'content-type': 'application/connect+json', ...auth },
    body: envelope({ process: { cmd: '/nonexistent/prog' } }) });
  const f = frames(Buffer.from(await r.arrayBuffer()));
  assert.equal(f.at(-1).flags, 2);
  assert.ok(f.at(-1).json.error.code);
});

test('a body over the limit is refused, and a garbage request line gets 400', async () => {
  const big = Buffer.alloc(40 << 20, 0x20);
  const r = await fetch(url('/process.Process/List'), { method: 'POST', headers: { 'content-type': 'application/json', ...auth }, body: big });
  assert.ok(r.status === 429 || r.status === 413, `status ${r.status}`);
  const raw = await new Promise((resolve, reject) => {
    const s = net.connect(ENVD_PORT, '127.0.0.1');
    let data = '';
    s.on('data', (d) => { data += d; });
    s.on('end', () => resolve(data));
    s.on('error', reject);
    s.write('GARBAGE\r\n\r\n');
    setTimeout(() => s.end(), 2000);
  });
  assert.match(raw, /^HTTP\/1\.1 400/);
  assert.equal((await fetch(url('/health'))).status, 204, 'still serving');
});
