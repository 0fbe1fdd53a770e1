// How envd resolves the paths of requests, as E2B's envd does
// (permissions.ExpandAndResolve): a relative path is under the requesting
// user's own home, only an empty path means the default workdir, "~" is the
// requesting user's home and "~name" is refused. Checked for /files (GET and
// POST), the filesystem RPCs and a process's cwd, with a default workdir that
// is neither user's home so every case tells them apart. A NUL byte in a path
// is refused (400 / invalid_argument), never cut short.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { startEnvd, debugSandbox, loadSdk, sdkName } from './lib/harness.mjs';

let envd, sbx, sdk, work, rootHome, userHome;
before(async () => {
  envd = await startEnvd();  // default user `user`
  ({ rootHome, userHome } = envd.world);
  work = path.join(envd.world.dir, 'work');
  fs.mkdirSync(work, { mode: 0o777 });
  fs.chmodSync(work, 0o777);
  await envd.init({ defaultWorkdir: work });
  sbx = await debugSandbox();
  sdk = await loadSdk();
});
// The world (homes and workdir) goes with envd.
after(async () => { await envd?.stop(); });

// A fresh name, removed afterwards from both homes and the workdir.
function fresh(t, prefix) {
  const name = `${prefix}-${crypto.randomBytes(4).toString('hex')}`;
  t.after(() => {
    for (const d of [rootHome, userHome, work]) fs.rmSync(path.join(d, name), { recursive: true, force: true });
  });
  return name;
}

const basic = (user) => ({ authorization: 'Basic ' + Buffer.from(`${user}:`).toString('base64') });

async function rpc(method, body, user) {
  const r = await fetch(`${envd.url}/filesystem.Filesystem/${method}`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', 'connect-protocol-version': '1', ...(user ? basic(user) : {}) },
    body: JSON.stringify(body),
  });
  return { status: r.status, body: await r.json() };
}

function filesUrl(query) {
  const u = new URL('/files', envd.url);
  for (const [k, v] of Object.entries(query)) u.searchParams.set(k, v);
  // URLSearchParams writes a NUL as %00, as a client encoding the path would.
  return u.toString();
}

test(`[${sdkName}] files.write / files.read: a relative path is in the requesting user's home, never the workdir`, async (t) => {
  const name = fresh(t, 'rel');
  const asRoot = await sbx.files.write(`${name}.txt`, 'by root', { user: 'root' });
  assert.equal(asRoot.path, path.join(rootHome, `${name}.txt`));
  assert.equal(fs.readFileSync(path.join(rootHome, `${name}.txt`), 'utf8'), 'by root');
  const asUser = await sbx.files.write(`${name}.txt`, 'by user');
  assert.equal(asUser.path, path.join(userHome, `${name}.txt`));
  assert.equal(fs.readFileSync(path.join(userHome, `${name}.txt`), 'utf8'), 'by user');
  const explicitUser = await sbx.files.write(`${name}/in/dir.txt`, 'nested', { user: 'user' });
  assert.equal(explicitUser.path, path.join(userHome, name, 'in', 'dir.txt'));
  assert.ok(!fs.existsSync(path.join(work, `${name}.txt`)), 'nothing lands in the workdir');

  assert.equal(await sbx.files.read(`${name}.txt`, { user: 'root' }), 'by root');
  assert.equal(await sbx.files.read(`${name}.txt`), 'by user');
  assert.equal(await sbx.files.read(`~/${name}.txt`, { user: 'root' }), 'by root');
  assert.equal(await sbx.files.read(`./${name}/../${name}.txt`, { user: 'user' }), 'by user');
  // Absolute paths are what they say, whoever asks.
  assert.equal(await sbx.files.read(path.join(userHome, `${name}.txt`), { user: 'root' }), 'by user');
});

test('POST /files: octet-stream and multipart (filename as the path) resolve relative paths in the home', async (t) => {
  const name = fresh(t, 'post');
  let r = await fetch(filesUrl({ path: `${name}.bin`, username: 'root' }),
    { method: 'POST', headers: { 'content-type': 'application/octet-stream' }, body: 'raw' });
  assert.equal(r.status, 200, await r.clone().text());
  assert.deepEqual((await r.json()).map((e) => e.path), [path.join(rootHome, `${name}.bin`)]);

  const form = new FormData();
  form.append('file', new Blob(['one']), `${name}/a.txt`);
  form.append('file', new Blob(['two']), `~/${name}/b.txt`);
  r = await fetch(filesUrl({}), { method: 'POST', headers: basic('root'), body: form });
  assert.equal(r.status, 200, await r.clone().text());
  assert.deepEqual((await r.json()).map((e) => e.path), [path.join(rootHome, name, 'a.txt'), path.join(rootHome, name, 'b.txt')]);

  const mine = new FormData();
  mine.append('file', new Blob(['three']), `${name}.txt`);
  r = await fetch(filesUrl({}), { method: 'POST', body: mine });
  assert.equal(r.status, 200, await r.clone().text());
  assert.deepEqual((await r.json()).map((e) => e.path), [path.join(userHome, `${name}.txt`)]);
  assert.ok(!fs.existsSync(path.join(work, name)) && !fs.existsSync(path.join(work, `${name}.txt`)));
});

test('an empty path is the default workdir: GET /files, Stat, ListDir', async (t) => {
  const name = fresh(t, 'wd');
  fs.writeFileSync(path.join(work, name), 'in the workdir');
  for (const user of ['root', 'user']) {
    // GET /files with no path, or an empty one, names the workdir: a directory.
    for (const q of [{}, { path: '' }]) {
      const r = await fetch(filesUrl({ ...q, username: user }));
      assert.equal(r.status, 400);
      assert.match((await r.json()).message, new RegExp(`'${work}' is a directory`));
    }
    const st = await rpc('Stat', {}, user);
    assert.equal(st.status, 200, JSON.stringify(st.body));
    assert.equal(st.body.entry.path, work);
    const ls = await rpc('ListDir', { path: '' }, user);
    assert.equal(ls.status, 200, JSON.stringify(ls.body));
    assert.ok(ls.body.entries.some((e) => e.path === path.join(work, name)), JSON.stringify(ls.body));
  }
  const info = await sbx.files.getInfo('');
  assert.equal(info.path, work);
});

test(`[${sdkName}] filesystem RPCs: relative paths are in the requesting user's home`, async (t) => {
  const name = fresh(t, 'fs');
  assert.equal(await sbx.files.makeDir(`${name}/sub`, { user: 'root' }), true);
  assert.ok(fs.statSync(path.join(rootHome, name, 'sub')).isDirectory());
  assert.equal((await sbx.files.getInfo(name, { user: 'root' })).path, path.join(rootHome, name));
  assert.equal(await sbx.files.exists(name, { user: 'root' }), true);
  assert.equal(await sbx.files.exists(name), false, 'the user\'s home has no such entry');
  const listed = await sbx.files.list(name, { user: 'root' });
  assert.deepEqual(listed.map((e) => e.path), [path.join(rootHome, name, 'sub')]);
  const moved = await sbx.files.rename(`${name}/sub`, `~/${name}/moved`, { user: 'root' });
  assert.equal(moved.path, path.join(rootHome, name, 'moved'));
  await sbx.files.remove(`${name}/moved`, { user: 'root' });
  assert.ok(!fs.existsSync(path.join(rootHome, name, 'moved')));

  assert.equal(await sbx.files.makeDir(name), true);
  assert.ok(fs.statSync(path.join(userHome, name)).isDirectory());
  assert.ok(!fs.existsSync(path.join(work, name)), 'nothing is made in the workdir');
  // "~name" is another user's home, which envd does not expand.
  const other = await rpc('Stat', { path: '~root' }, 'user');
  assert.equal(other.status, 400);
  assert.equal(other.body.code, 'invalid_argument');
});

test(`[${sdkName}] process cwd: empty is the workdir, relative is under the user's home, a missing one is refused`, async (t) => {
  const name = fresh(t, 'cwd');
  fs.mkdirSync(path.join(rootHome, name));
  fs.mkdirSync(path.join(userHome, name));
  assert.equal((await sbx.commands.run('pwd')).stdout, `${work}\n`);
  assert.equal((await sbx.commands.run('pwd', { user: 'root' })).stdout, `${work}\n`);
  assert.equal((await sbx.commands.run('pwd', { cwd: name, user: 'root' })).stdout, `${path.join(rootHome, name)}\n`);
  assert.equal((await sbx.commands.run('pwd', { cwd: name })).stdout, `${path.join(userHome, name)}\n`);
  assert.equal((await sbx.commands.run('pwd', { cwd: '~', user: 'root' })).stdout, `${rootHome}\n`);
  await assert.rejects(sbx.commands.run('pwd', { cwd: `${name}/missing` }), sdk.InvalidArgumentError);
});

test('a NUL byte in a /files path is 400, never cut short', async (t) => {
  const name = fresh(t, 'nul');
  const target = path.join(userHome, `${name}.txt`);
  fs.writeFileSync(target, 'secret');
  // Cut at the NUL, the path would name `target`.
  let r = await fetch(filesUrl({ path: `${target}\0.png` }));
  assert.equal(r.status, 400);
  assert.match((await r.json()).message, /NUL/);
  r = await fetch(filesUrl({ path: `${name}.txt\0` }));
  assert.equal(r.status, 400);

  r = await fetch(filesUrl({ path: `${target}\0x` }),
    { method: 'POST', headers: { 'content-type': 'application/octet-stream' }, body: 'overwritten' });
  assert.equal(r.status, 400);
  assert.equal(fs.readFileSync(target, 'utf8'), 'secret');

  // A multipart filename can carry a NUL through RFC 5987 encoding.
  const boundary = 'b' + crypto.randomBytes(8).toString('hex');
  const body = `--${boundary}\r\nContent-Disposition: form-data; name="file"; filename*=utf-8''${encodeURIComponent(target)}%00x\r\n` +
    `Content-Type: application/octet-stream\r\n\r\noverwritten\r\n--${boundary}--\r\n`;
  r = await fetch(filesUrl({}), { method: 'POST', headers: { 'content-type': `multipart/form-data; boundary=${boundary}` }, body });
  assert.equal(r.status, 400);
  assert.equal(fs.readFileSync(target, 'utf8'), 'secret');
  assert.deepEqual(fs.readdirSync(userHome).filter((f) => f.startsWith(name)), [`${name}.txt`], 'no temp file left');
});

test(`[${sdkName}] a NUL byte in an RPC path or a process's cmd, args, envs or cwd is invalid_argument`, async (t) => {
  const name = fresh(t, 'nulrpc');
  const target = path.join(userHome, name);
  fs.mkdirSync(target);
  for (const [method, body] of [['Stat', { path: `${target}\0/x` }], ['ListDir', { path: `${target}\0` }],
    ['MakeDir', { path: `${target}/new\0dir` }], ['Remove', { path: `${target}\0/x` }],
    ['Move', { source: `${target}\0x`, destination: `${target}/y` }], ['Move', { source: target, destination: `${target}2\0` }],
    ['CreateWatcher', { path: `${target}\0` }]]) {
    const r = await rpc(method, body);
    assert.equal(r.status, 400, `${method} ${JSON.stringify(body)}: ${JSON.stringify(r.body)}`);
    assert.equal(r.body.code, 'invalid_argument');
  }
  assert.ok(fs.existsSync(target), 'Remove did not act on the path cut at the NUL');
  assert.deepEqual(fs.readdirSync(target), []);
  assert.ok(!fs.existsSync(`${target}2`));

  await assert.rejects(sbx.files.list(`${target}\0`), sdk.InvalidArgumentError);
  await assert.rejects(sbx.commands.run('pwd', { cwd: `${target}\0/x` }), sdk.InvalidArgumentError);
  await assert.rejects(sbx.commands.run('echo "a\0b"'), sdk.InvalidArgumentError);
  await assert.rejects(sbx.commands.run('true', { envs: { A: 'x\0y' } }), sdk.InvalidArgumentError);
});

test('/init refuses a defaultWorkdir with a NUL byte or "~name", and keeps the one it had', async () => {
  for (const bad of [`${work}\0x`, '~root/x']) {
    const r = await fetch(`${envd.url}/init`, { method: 'POST', headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ defaultWorkdir: bad }) });
    assert.equal(r.status, 400, bad);
  }
  assert.equal((await sbx.commands.run('pwd')).stdout, `${work}\n`);
});
