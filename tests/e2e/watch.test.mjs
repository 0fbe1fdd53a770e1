// files.watchDir (the WatchDir server stream over inotify) through the real
// E2B SDK, plus the raw stream framing and the polling watchers.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { startEnvd, debugSandbox, loadSdk, sdkName, sleep } from './lib/harness.mjs';

let envd, sbx, sdk, home;
before(async () => {
  envd = await startEnvd();
  sbx = await debugSandbox();
  sdk = await loadSdk();
  home = envd.world.userHome;
});
after(async () => { await envd?.stop(); });

async function scratch(t, name) {
  const dir = path.join(home, name);
  fs.rmSync(dir, { recursive: true, force: true });
  t.after(() => fs.rmSync(dir, { recursive: true, force: true }));
  await sbx.files.makeDir(name);
  return name;
}

// Collects events; waitFor resolves once one matches (or fails after `ms`).
function collector() {
  const events = [];
  const waiters = [];
  const onEvent = (e) => {
    events.push(e);
    for (const w of [...waiters]) if (w.pred(e)) { waiters.splice(waiters.indexOf(w), 1); w.resolve(e); }
  };
  const waitFor = (type, name, ms = 3000) => {
    const pred = (e) => e.type === type && e.name === name;
    const hit = events.find(pred);
    if (hit) return Promise.resolve(hit);
    return new Promise((resolve, reject) => {
      const w = { pred, resolve };
      waiters.push(w);
      setTimeout(() => reject(new Error(`no ${type} ${name} within ${ms} ms; saw ${JSON.stringify(events.map((e) => [e.type, e.name]))}`)), ms);
    });
  };
  return { events, onEvent, waitFor };
}

// inotify instances envd holds open: one per live watch.
function inotifyFds() {
  const dir = `/proc/${envd.proc.pid}/fd`;
  let n = 0;
  for (const fd of fs.readdirSync(dir)) {
    try { if (fs.readlinkSync(`${dir}/${fd}`) === 'anon_inode:inotify') n++; } catch {}
  }
  return n;
}

async function until(pred, ms = 3000) {
  const end = Date.now() + ms;
  while (!pred()) {
    if (Date.now() > end) return false;
    await sleep(20);
  }
  return true;
}

test(`[${sdkName}] watchDir: create, write, chmod, rename, remove`, async (t) => {
  const d = await scratch(t, 'test_watch_dir');
  const T = sdk.FilesystemEventType;
  const c = collector();
  const handle = await sbx.files.watchDir(d, c.onEvent);
  t.after(() => handle.stop());
  await sbx.commands.run(`echo x > ${d}/f`);
  await c.waitFor(T.CREATE, 'f');
  await c.waitFor(T.WRITE, 'f');
  await sbx.commands.run(`chmod 600 ${d}/f`);
  await c.waitFor(T.CHMOD, 'f');
  await sbx.files.rename(`${d}/f`, `${d}/g`);
  await c.waitFor(T.RENAME, 'f');
  await c.waitFor(T.CREATE, 'g');
  await sbx.files.remove(`${d}/g`);
  await c.waitFor(T.REMOVE, 'g');
  // Without includeEntry no event carries an entry.
  assert.ok(c.events.every((e) => e.entry === undefined));
  // Not recursive: nested changes are not reported.
  await sbx.files.makeDir(`${d}/sub`);
  await c.waitFor(T.CREATE, 'sub');
  await sbx.commands.run(`echo x > ${d}/sub/inner`);
  await sleep(200);
  assert.ok(!c.events.some((e) => e.name.startsWith('sub/')), JSON.stringify(c.events));
});

test('watchDir recursive: existing subdirectories and a file in a new subdirectory', async (t) => {
  const d = await scratch(t, 'test_recursive_watch_dir');
  await sbx.files.makeDir(`${d}/nested`);
  const T = sdk.FilesystemEventType;
  const c = collector();
  const handle = await sbx.files.watchDir(d, c.onEvent, { recursive: true });
  t.after(() => handle.stop());
  await sbx.commands.run(`echo x > ${d}/nested/f`);
  await c.waitFor(T.WRITE, 'nested/f');
  await sbx.files.makeDir(`${d}/later`);
  await c.waitFor(T.CREATE, 'later');
  await sbx.commands.run(`echo x > ${d}/later/f`);
  await c.waitFor(T.WRITE, 'later/f');
  // Created in one go, before envd could add the watches.
  await sbx.commands.run(`mkdir -p ${d}/a/b/c && echo x > ${d}/a/b/c/deep`);
  await c.waitFor(T.CREATE, 'a/b/c/deep');
});

test('watchDir includeEntry: entries for surviving paths only', async (t) => {
  const d = await scratch(t, 'test_watch_dir_entry');
  const T = sdk.FilesystemEventType;
  await sbx.commands.run(`echo old > ${d}/test_watch.txt`);
  const c = collector();
  const handle = await sbx.files.watchDir(d, c.onEvent, { includeEntry: true });
  t.after(() => handle.stop());
  await sbx.commands.run(`echo new >> ${d}/test_watch.txt`);
  const ev = await c.waitFor(T.WRITE, 'test_watch.txt');
  assert.ok(ev.entry, 'WRITE carries the entry');
  assert.equal(ev.entry.name, 'test_watch.txt');
  assert.equal(ev.entry.path, `${home}/${d}/test_watch.txt`);
  assert.equal(ev.entry.type, sdk.FileType.FILE);
  assert.equal(ev.entry.owner, 'user');
  await sbx.files.remove(`${d}/test_watch.txt`);
  const rm = await c.waitFor(T.REMOVE, 'test_watch.txt');
  assert.equal(rm.entry, undefined);
});

test('watchDir: stop() ends delivery and envd drops the watch', async (t) => {
  const d = await scratch(t, 'test_watch_stop');
  const T = sdk.FilesystemEventType;
  const before = inotifyFds();
  const c = collector();
  const handle = await sbx.files.watchDir(d, c.onEvent);
  assert.equal(inotifyFds(), before + 1);
  await sbx.commands.run(`touch ${d}/one`);
  await c.waitFor(T.CREATE, 'one');
  await handle.stop();
  // envd notices the closed connection although the watch is idle.
  assert.ok(await until(() => inotifyFds() === before), 'inotify descriptor released');
  const n = c.events.length;
  await sbx.commands.run(`touch ${d}/two`);
  await sleep(200);
  assert.equal(c.events.length, n);
});

test('watchDir: missing directory is FileNotFoundError, a file is an error', async (t) => {
  const d = await scratch(t, 'test_watch_errors');
  await assert.rejects(sbx.files.watchDir(`${d}/missing`, () => {}), sdk.FileNotFoundError);
  await sbx.commands.run(`touch ${d}/file`);
  await assert.rejects(sbx.files.watchDir(`${d}/file`, () => {}), (err) => {
    assert.ok(err instanceof sdk.SandboxError, String(err));
    assert.ok(!(err instanceof sdk.FileNotFoundError));
    return true;
  });
});

test('watchDir: the stream ends at its timeout and onExit hears of it', async (t) => {
  const d = await scratch(t, 'test_watch_timeout');
  const before = inotifyFds();
  let exited;
  const done = new Promise((r) => { exited = r; });
  await sbx.files.watchDir(d, () => {}, { timeoutMs: 400, onExit: (err) => exited(err ?? null) });
  const err = await Promise.race([done, sleep(5000).then(() => 'no exit')]);
  assert.notEqual(err, 'no exit');
  assert.ok(err instanceof Error, String(err));
  assert.ok(await until(() => inotifyFds() === before), 'inotify descriptor released');
});

// Sends one Connect streaming request and returns the decoded frames.
async function rawStream(body, headers) {
  const json = Buffer.from(JSON.stringify(body));
  const env = Buffer.alloc(5 + json.length);
  env.writeUInt8(0, 0);
  env.writeUInt32BE(json.length, 1);
  json.copy(env, 5);
  const r = await fetch(`${envd.url}/filesystem.Filesystem/WatchDir`, {
    method: 'POST', body: env,
    headers: { 'content-type': 'application/connect+json', 'connect-protocol-version': '1', ...headers },
  });
  assert.equal(r.status, 200);
  assert.equal(r.headers.get('content-type'), 'application/connect+json');
  const buf = Buffer.from(await r.arrayBuffer());
  const frames = [];
  for (let off = 0; off < buf.length;) {
    const flags = buf.readUInt8(off);
    const len = buf.readUInt32BE(off + 1);
    frames.push({ flags, msg: JSON.parse(buf.subarray(off + 5, off + 5 + len).toString()) });
    off += 5 + len;
  }
  return frames;
}

test('raw WatchDir: start, keepalives, then deadline_exceeded at Connect-Timeout-Ms', async (t) => {
  const d = await scratch(t, 'test_watch_raw');
  const frames = await rawStream({ path: d }, { 'connect-timeout-ms': '2300', 'keepalive-ping-interval': '1' });
  assert.deepEqual(frames[0], { flags: 0, msg: { start: {} } });
  const keepalives = frames.filter((f) => f.flags === 0 && f.msg.keepalive);
  assert.ok(keepalives.length >= 2, JSON.stringify(frames));
  const end = frames.at(-1);
  assert.equal(end.flags, 2);
  assert.equal(end.msg.error.code, 'deadline_exceeded');
  // Errors before the start frame are end-stream errors too.
  const missing = await rawStream({ path: `${d}/nope` });
  assert.equal(missing.length, 1);
  assert.equal(missing[0].flags, 2);
  assert.equal(missing[0].msg.error.code, 'not_found');
});

async function rpc(method, body) {
  const r = await fetch(`${envd.url}/filesystem.Filesystem/${method}`, {
    method: 'POST', headers: { 'content-type': 'application/json', 'connect-protocol-version': '1' },
    body: JSON.stringify(body),
  });
  return { status: r.status, body: await r.json() };
}

test('polling watchers: CreateWatcher, GetWatcherEvents drains, RemoveWatcher', async (t) => {
  const d = await scratch(t, 'test_poll_watch');
  const before = inotifyFds();
  const created = await rpc('CreateWatcher', { path: d, recursive: true, includeEntry: true });
  assert.equal(created.status, 200);
  const id = created.body.watcherId;
  assert.match(id, /^w[a-z0-9]+$/);
  fs.mkdirSync(`${home}/${d}/sub`);
  fs.writeFileSync(`${home}/${d}/sub/f`, 'x');
  // The file may be written before the new directory's watch is in place:
  // then it is reported as created, with its content already there.
  const isFile = (e) => e.name === 'sub/f' && (e.type === 'EVENT_TYPE_WRITE' || e.type === 'EVENT_TYPE_CREATE')
    && e.entry?.size === '1';
  let events = [];
  for (let i = 0; i < 50 && !events.some(isFile); i++) {
    const got = await rpc('GetWatcherEvents', { watcherId: id });
    assert.equal(got.status, 200);
    events = events.concat(got.body.events ?? []);
    await sleep(20);
  }
  assert.ok(events.some((e) => e.name === 'sub' && e.type === 'EVENT_TYPE_CREATE'), JSON.stringify(events));
  const w = events.find(isFile);
  assert.ok(w, JSON.stringify(events));
  assert.equal(w.entry.type, 'FILE_TYPE_FILE');
  assert.equal(w.entry.size, '1');
  // Drained: nothing new until something happens.
  const again = await rpc('GetWatcherEvents', { watcher_id: id });
  assert.deepEqual(again.body.events ?? [], []);
  assert.equal((await rpc('RemoveWatcher', { watcherId: id })).status, 200);
  assert.equal(inotifyFds(), before);
  const gone = await rpc('GetWatcherEvents', { watcherId: id });
  assert.equal(gone.status, 404);
  assert.equal(gone.body.code, 'not_found');
  assert.equal((await rpc('RemoveWatcher', { watcherId: id })).status, 404);
  assert.equal((await rpc('CreateWatcher', { path: `${d}/missing` })).status, 404);
});
