// The template registry through the gateway's REST API: GET /templates,
// POST /templates/reload picking up a template added on disk (then used by
// the SDK), VM image entries, and the errors. Needs root.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { startGateway, gatewaySkipReason, loadSdk, sdkName, TEST_API_KEY } from './lib/harness.mjs';

const skip = gatewaySkipReason();
const opt = skip ? { skip } : {};
let gw, Sandbox, templatesDir;
before(async () => {
  if (skip) return;
  gw = await startGateway();
  templatesDir = path.join(gw.stateDir, 'templates');
  ({ Sandbox } = await loadSdk());
});
// The state dir, and every template made under it, goes with the gateway.
after(async () => { await gw?.stop(); });

const api = (p, init = {}) => fetch(`${gw.url}${p}`, { ...init, headers: { 'X-API-KEY': TEST_API_KEY, 'content-type': 'application/json', ...(init.headers || {}) } });

async function reload() {
  const r = await api('/templates/reload', { method: 'POST' });
  assert.equal(r.status, 200);
  return await r.json();
}

test('GET /templates lists base with its description and size', opt, async () => {
  const r = await api('/templates');
  assert.equal(r.status, 200);
  assert.match(r.headers.get('content-type'), /application\/json/);
  const list = await r.json();
  assert.ok(Array.isArray(list));
  const base = list.find((t) => t.templateID === 'base');
  assert.ok(base, JSON.stringify(list));
  assert.equal(base.name, 'base');
  assert.equal(base.backend, 'ns');
  assert.equal(base.path, path.join(templatesDir, 'base'));
  assert.equal(base.source, 'host');
  assert.match(base.buildID, /^[0-9a-f]{64}$/);
  assert.equal(base.cpuCount, 1);
  assert.equal(base.memoryMB, 512);
  // The rootfs only: /usr is a bind, so base is small but not empty.
  assert.ok(base.sizeBytes > 0 && base.sizeBytes < 256 << 20, `sizeBytes ${base.sizeBytes}`);
  // A trailing slash is the same endpoint.
  assert.equal((await api('/templates/')).status, 200);
});

test(`[${sdkName}] a template added on disk is usable after POST /templates/reload, and gone after removal`, opt, async () => {
  const name = `copy-${process.pid}`;
  const dir = path.join(templatesDir, name);
  fs.mkdirSync(dir);
  try {
    fs.copyFileSync(path.join(templatesDir, 'base', 'template.toml'), path.join(dir, 'template.toml'));
    execFileSync('cp', ['-a', path.join(templatesDir, 'base', 'rootfs'), path.join(dir, 'rootfs')]);
    fs.writeFileSync(path.join(dir, 'rootfs', 'etc', 'flavour'), `${name}\n`);

    // Not there before the reload.
    let r = await api('/sandboxes', { method: 'POST', body: JSON.stringify({ templateID: name }) });
    assert.equal(r.status, 400);
    const list = await reload();
    const t = list.find((x) => x.templateID === name);
    assert.ok(t, JSON.stringify(list));
    assert.equal(t.path, dir);
    assert.equal(t.backend, 'ns');
    assert.ok(t.sizeBytes > 0);
    // The reload's answer is what GET /templates says from now on.
    assert.deepEqual(await (await api('/templates')).json(), list);

    const sbx = await Sandbox.create(name, gw.opts);
    try {
      assert.equal((await sbx.getInfo()).templateId, name);
      const out = await sbx.commands.run('cat /etc/flavour; id -un');
      assert.equal(out.stdout, `${name}\nuser\n`);
    } finally {
      await sbx.kill();
    }

    fs.rmSync(dir, { recursive: true, force: true });
    assert.ok(!(await reload()).some((x) => x.templateID === name));
    r = await api('/sandboxes', { method: 'POST', body: JSON.stringify({ templateID: name }) });
    assert.equal(r.status, 400);
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
    await reload();
  }
});

test(`[${sdkName}] a template's start_cmd runs in every sandbox and create waits for its ready_cmd; env reaches it, envVars win`, opt, async () => {
  const name = `svc-${process.pid}`;
  const dir = path.join(templatesDir, name);
  fs.mkdirSync(dir);
  try {
    execFileSync('cp', ['-a', path.join(templatesDir, 'base', 'rootfs'), path.join(dir, 'rootfs')]);
    const base = fs.readFileSync(path.join(templatesDir, 'base', 'template.toml'), 'utf8');
    // The service answers only once it has slept a while: without the
    // readiness wait, the request right after create would find no listener.
    fs.writeFileSync(path.join(dir, 'template.toml'), base +
      'start_cmd = "sleep 0.3; mkdir -p /tmp/www && echo \\"$GREETING\\" > /tmp/www/index.html && cd /tmp/www && exec python3 -m http.server 8000 --bind 127.0.0.1"\n' +
      'ready_cmd = "python3 -c \'import urllib.request; urllib.request.urlopen(\\"http://127.0.0.1:8000/\\", timeout=1)\'"\n' +
      'env = ["GREETING=hello from the template", "WHO=template"]\n');
    const t = (await reload()).find((x) => x.templateID === name);
    assert.ok(t, 'the template loads');
    assert.ok(t.startCmd.includes('http.server'));

    const sbx = await Sandbox.create(name, { ...gw.opts, envs: { WHO: 'create' } });
    try {
      const r = await fetch(`${gw.url}/`, { headers: { 'E2b-Sandbox-Id': sbx.sandboxId, 'E2b-Sandbox-Port': '8000' } });
      assert.equal(r.status, 200);
      assert.equal(await r.text(), 'hello from the template\n');
      const out = await sbx.commands.run('echo "$GREETING/$WHO"');
      assert.equal(out.stdout, 'hello from the template/create\n');
    } finally {
      await sbx.kill();
    }
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
    await reload();
  }
});

test('a stray VM image never shadows a template; a template for another backend is listed and refused', opt, async () => {
  const name = `vm-${process.pid}`;
  const img = path.join(templatesDir, `base.img`);
  const conf = path.join(templatesDir, `base.conf`);
  const dir = path.join(templatesDir, name);
  try {
    // What an older layout called a VM template: ignored, base stays base.
    fs.writeFileSync(img, Buffer.alloc(64 << 10));
    fs.writeFileSync(conf, 'backend = "vm"\n');
    // A directory template that says backend = "vm".
    fs.mkdirSync(path.join(dir, 'rootfs'), { recursive: true });
    fs.writeFileSync(path.join(dir, 'template.toml'), 'backend = "vm"\ncpu_count = 2\nbuild_id = "vm-build"\n');
    const list = await reload();
    const base = list.find((x) => x.templateID === 'base');
    assert.equal(base.backend, 'ns');
    assert.equal(base.path, path.join(templatesDir, 'base'));
    const t = list.find((x) => x.templateID === name);
    assert.ok(t);
    assert.equal(t.backend, 'vm');
    assert.equal(t.cpuCount, 2);
    const r = await api('/v2/sandboxes', { method: 'POST', body: JSON.stringify({ templateID: name }) });
    assert.equal(r.status, 501);
    assert.match((await r.json()).message, /vm backend/);
    const sbx = await Sandbox.create('base', gw.opts);
    assert.equal((await sbx.commands.run('echo still base')).stdout, 'still base\n');
    await sbx.kill();
  } finally {
    for (const p of [img, conf, dir]) fs.rmSync(p, { recursive: true, force: true });
    await reload();
  }
});

test('errors: unknown template names base, no key is 401, DELETE /templates/{id} of base or of nothing', opt, async () => {
  const r = await api('/v2/sandboxes', { method: 'POST', body: JSON.stringify({ templateID: 'no-such-template' }) });
  assert.equal(r.status, 400);
  const body = await r.json();
  assert.equal(body.code, 400);
  assert.match(body.message, /no-such-template/);
  assert.match(body.message, /\bbase\b/);
  await assert.rejects(Sandbox.create('no-such-template', gw.opts), /base/);

  for (const [p, method] of [['/templates', 'GET'], ['/templates/reload', 'POST']]) {
    let res = await fetch(`${gw.url}${p}`, { method });
    assert.equal(res.status, 401, p);
    assert.equal((await res.json()).code, 401);
    res = await fetch(`${gw.url}${p}`, { method, headers: { 'X-API-KEY': 'e2b_wrong' } });
    assert.equal(res.status, 401, p);
  }

  // base is what creates fall back to: never removed (409); an unknown one is 404.
  const del = await api('/templates/base', { method: 'DELETE' });
  assert.equal(del.status, 409);
  assert.match((await del.json()).message, /base is the default template/);
  assert.equal((await api('/templates/no-such-template', { method: 'DELETE' })).status, 404);
  assert.ok((await (await api('/templates')).json()).some((t) => t.templateID === 'base'));
  assert.equal((await api('/templates', { method: 'POST' })).status, 501);
});
