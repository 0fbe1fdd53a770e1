// envd acts on files with the requesting user's credentials: through the real
// E2B SDK (debug mode, envd run by the test as root, default user `user`),
// every file operation done "as user" is checked by the kernel as that user.
// A symlink the user plants towards a root-only file leads nowhere the user
// could not go anyway; what the user creates is the user's; root still can do
// everything. Then out of space: uploads into a full file system raise the
// SDK's NotEnoughSpaceError (507), never its RateLimitError, and a read-only
// file system is a permission error, not "out of space".
//
// Everything happens inside the test's own temp world (root-owned, 0755),
// and the small file systems are tmpfs mounts made under it and unmounted
// after.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { execFileSync } from 'node:child_process';
import { startEnvd, debugSandbox, loadSdk, sdkName, isRoot } from './lib/harness.mjs';

const skip = isRoot ? null : 'needs root: envd must be able to take the ids of `user` (uid 1000)';
const opt = skip ? { skip } : {};

let envd, sbx, sdk, world;
const mounts = [];

before(async () => {
  if (skip) return;
  envd = await startEnvd();
  world = envd.world;
  sbx = await debugSandbox();
  sdk = await loadSdk();
});
after(async () => {
  for (const m of mounts.reverse()) {
    try { execFileSync('umount', [m]); } catch {}
  }
  await envd?.stop();
});

const ROOT_TEXT = 'root only\n';

// A fresh set of root-owned targets and the user's links to them:
//   <world>/<n>/secret        root:root 0644 in a root-owned 0755 directory
//   <world>/<n>/shadow        root:root 0600
//   <world>/<n>/private/      root:root 0700, holding .bashrc
//   ~user/<n>-*               symlinks owned by the user, as if planted by it
function targets(t) {
  const n = 'creds-' + crypto.randomBytes(4).toString('hex');
  const dir = path.join(world.dir, n);
  fs.mkdirSync(dir, { mode: 0o755 });
  const secret = path.join(dir, 'secret');
  const shadow = path.join(dir, 'shadow');
  const priv = path.join(dir, 'private');
  const bashrc = path.join(priv, '.bashrc');
  fs.writeFileSync(secret, ROOT_TEXT, { mode: 0o644 });
  fs.writeFileSync(shadow, ROOT_TEXT, { mode: 0o600 });
  fs.mkdirSync(priv, { mode: 0o700 });
  fs.writeFileSync(bashrc, ROOT_TEXT, { mode: 0o644 });
  const link = (name, to) => {
    const p = path.join(world.userHome, `${n}-${name}`);
    fs.symlinkSync(to, p);
    fs.lchownSync(p, world.uid, world.gid);
    return `${n}-${name}`;  // relative: in the user's home
  };
  t.after(() => {
    fs.rmSync(dir, { recursive: true, force: true });
    for (const e of fs.readdirSync(world.userHome)) {
      if (e.startsWith(n)) fs.rmSync(path.join(world.userHome, e), { recursive: true, force: true });
    }
  });
  return {
    n, dir, secret, shadow, priv, bashrc,
    toSecret: link('secret', secret), toShadow: link('shadow', shadow), toBashrc: link('bashrc', bashrc),
  };
}

// The SDK's error for a refused file operation: a SandboxError that is none
// of the more specific kinds, saying why.
async function deniedAs(promise, re = /permission denied|EACCES|EPERM/i) {
  await assert.rejects(promise, (e) => {
    assert.ok(e instanceof sdk.SandboxError, `${e?.name}: ${e?.message}`);
    assert.ok(!(e instanceof sdk.NotFoundError) && !(e instanceof sdk.RateLimitError), `${e.name}: ${e.message}`);
    assert.match(e.message, re);
    return true;
  });
}

const owner = (p) => { const st = fs.lstatSync(p); return [st.uid, st.gid]; };

test(`[${sdkName}] files.write as user through a planted symlink cannot touch root's files`, opt, async (t) => {
  const x = targets(t);
  await deniedAs(sbx.files.write(x.toSecret, 'pwned', { user: 'user' }));
  await deniedAs(sbx.files.write(x.toShadow, 'pwned', { user: 'user' }));
  await deniedAs(sbx.files.write(x.toBashrc, 'pwned', { user: 'user' }));
  // Several files in one multipart upload: refused as well.
  await deniedAs(sbx.files.write([{ path: x.toSecret, data: 'pwned' }], { user: 'user' }));
  for (const f of [x.secret, x.shadow, x.bashrc]) {
    assert.equal(fs.readFileSync(f, 'utf8'), ROOT_TEXT, f);
    assert.deepEqual(owner(f), [0, 0], f);
  }
  // No temp file was left behind either.
  assert.deepEqual(fs.readdirSync(x.dir).sort(), ['private', 'secret', 'shadow']);
  // Absolute paths: the same.
  await deniedAs(sbx.files.write(x.secret, 'pwned', { user: 'user' }));
  await deniedAs(sbx.files.write(path.join(x.priv, 'new'), 'pwned', { user: 'user' }));
  assert.equal(fs.readFileSync(x.secret, 'utf8'), ROOT_TEXT);

  // Root may: the link's target is replaced, and stays root's.
  await sbx.files.write(path.join(world.userHome, x.toBashrc), 'by root\n', { user: 'root' });
  assert.equal(fs.readFileSync(x.bashrc, 'utf8'), 'by root\n');
  assert.deepEqual(owner(x.bashrc), [0, 0]);
});

test(`[${sdkName}] files.write as user makes missing parents anywhere for the user, as E2B does, never through a link`, opt, async (t) => {
  const x = targets(t);
  // A new directory in a root-owned one: made by envd, given to the user.
  const file = path.join(x.dir, 'made', 'deeper', 'f.txt');
  await sbx.files.write(file, 'mine', { user: 'user' });
  assert.equal(fs.readFileSync(file, 'utf8'), 'mine');
  for (const p of [path.join(x.dir, 'made'), path.join(x.dir, 'made', 'deeper'), file]) {
    assert.deepEqual(owner(p), [world.uid, world.gid], p);
  }
  // Through a link the user planted towards root's private directory: not
  // followed by root; as the user it is refused, and nothing is made there.
  const linkToPriv = `${x.n}-priv`;
  fs.symlinkSync(x.priv, path.join(world.userHome, linkToPriv));
  fs.lchownSync(path.join(world.userHome, linkToPriv), world.uid, world.gid);
  await deniedAs(sbx.files.write(`${linkToPriv}/sub/f.txt`, 'pwned', { user: 'user' }));
  assert.deepEqual(fs.readdirSync(x.priv), ['.bashrc']);
});

test(`[${sdkName}] files.read as user of root-only files fails, as root it works`, opt, async (t) => {
  const x = targets(t);
  await deniedAs(sbx.files.read(x.shadow, { user: 'user' }));
  await deniedAs(sbx.files.read(x.bashrc, { user: 'user' }));
  await deniedAs(sbx.files.read(x.toShadow, { user: 'user' }));
  await deniedAs(sbx.files.read(x.toBashrc, { user: 'user' }));
  // A file user may read (0644 in a 0755 directory) is readable, link or not.
  assert.equal(await sbx.files.read(x.toSecret, { user: 'user' }), ROOT_TEXT);
  assert.equal(await sbx.files.read(x.shadow, { user: 'root' }), ROOT_TEXT);
  assert.equal(await sbx.files.read(path.join(world.userHome, x.toBashrc), { user: 'root' }), ROOT_TEXT);
});

test(`[${sdkName}] what user writes or makes is owned by user from the start`, opt, async (t) => {
  const n = 'own-' + crypto.randomBytes(4).toString('hex');
  t.after(() => {
    fs.rmSync(path.join(world.userHome, n), { recursive: true, force: true });
    fs.rmSync(path.join(world.dir, n), { recursive: true, force: true });
  });
  const w = await sbx.files.write(`${n}/a/b/f.txt`, 'mine', { user: 'user' });
  for (const p of [w.path, path.dirname(w.path), path.dirname(path.dirname(w.path))]) {
    assert.deepEqual(owner(p), [world.uid, world.gid], p);
  }
  assert.equal(await sbx.files.makeDir(`${n}/made/deep`, { user: 'user' }), true);
  assert.deepEqual(owner(path.join(world.userHome, n, 'made', 'deep')), [world.uid, world.gid]);
  await sbx.files.rename(`${n}/a/b/f.txt`, `${n}/moved/f.txt`, { user: 'user' });
  assert.deepEqual(owner(path.join(world.userHome, n, 'moved')), [world.uid, world.gid]);
  // Root's are root's.
  const r = await sbx.files.write(path.join(world.dir, n, 'r.txt'), 'root', { user: 'root' });
  assert.deepEqual(owner(r.path), [0, 0]);
  assert.deepEqual(owner(path.join(world.dir, n)), [0, 0]);
});

test(`[${sdkName}] filesystem RPCs as user are checked as user`, opt, async (t) => {
  const x = targets(t);
  // Listing a directory user cannot read fails; root lists it.
  await deniedAs(sbx.files.list(x.priv, { user: 'user' }));
  assert.deepEqual((await sbx.files.list(x.priv, { user: 'root' })).map((e) => e.name), ['.bashrc']);
  // Deeper, such a directory is listed but not entered.
  const names = async (user) => (await sbx.files.list(x.dir, { user, depth: 2 })).map((e) => e.name).sort();
  assert.deepEqual(await names('user'), ['private', 'secret', 'shadow']);
  assert.deepEqual(await names('root'), ['.bashrc', 'private', 'secret', 'shadow']);
  // A recursive watch as user goes past it, too.
  const events = [];
  const w = await sbx.files.watchDir(x.dir, (e) => events.push(e.name), { user: 'user', recursive: true });
  fs.writeFileSync(path.join(x.dir, 'new'), 'x');
  for (let i = 0; i < 100 && !events.includes('new'); i++) await new Promise((r) => setTimeout(r, 20));
  await w.stop();
  fs.rmSync(path.join(x.dir, 'new'));
  assert.ok(events.includes('new'), JSON.stringify(events));
  // Stat of an entry in it.
  await deniedAs(sbx.files.getInfo(x.bashrc, { user: 'user' }));
  assert.equal((await sbx.files.getInfo(x.bashrc, { user: 'root' })).name, '.bashrc');
  // Make a directory where user may not write.
  await deniedAs(sbx.files.makeDir(path.join(x.dir, 'newdir'), { user: 'user' }));
  await deniedAs(sbx.files.makeDir(path.join(x.priv, 'newdir'), { user: 'user' }));
  // Move root's file into the user's home, or the user's file over root's.
  await deniedAs(sbx.files.rename(x.secret, `${x.n}-stolen`, { user: 'user' }));
  await sbx.files.write(`${x.n}-mine`, 'mine', { user: 'user' });
  await deniedAs(sbx.files.rename(`${x.n}-mine`, x.secret, { user: 'user' }));
  // Remove root's files.
  await deniedAs(sbx.files.remove(x.secret, { user: 'user' }));
  await deniedAs(sbx.files.remove(x.priv, { user: 'user' }));
  // Watch a directory user cannot read.
  await deniedAs(sbx.files.watchDir(x.priv, () => {}, { user: 'user' }));
  // Nothing changed.
  assert.deepEqual(fs.readdirSync(x.dir).sort(), ['private', 'secret', 'shadow']);
  assert.deepEqual(fs.readdirSync(x.priv), ['.bashrc']);
  assert.equal(fs.readFileSync(x.secret, 'utf8'), ROOT_TEXT);
  // The user's link itself is the user's to remove; its target stays.
  await sbx.files.remove(x.toSecret, { user: 'user' });
  assert.equal(fs.readFileSync(x.secret, 'utf8'), ROOT_TEXT);
  // Root can do all of it.
  await sbx.files.rename(x.secret, path.join(x.dir, 'moved'), { user: 'root' });
  await sbx.files.remove(x.priv, { user: 'root' });
  assert.deepEqual(fs.readdirSync(x.dir).sort(), ['moved', 'shadow']);
});

// A tmpfs of its own under the world, unmounted after the file.
function smallFs(name, options) {
  const dir = path.join(world.dir, name);
  fs.mkdirSync(dir);
  execFileSync('mount', ['-t', 'tmpfs', '-o', options, 'coppice-e2e', dir]);
  mounts.push(dir);
  return dir;
}

test(`[${sdkName}] an upload into a full file system is NotEnoughSpaceError, not a rate limit`, opt, async () => {
  const dir = smallFs('small', 'size=256k,mode=1777');
  const big = crypto.randomBytes(1024 * 1024);
  for (const user of ['user', 'root']) {
    await assert.rejects(sbx.files.write(path.join(dir, `big-${user}.bin`), big, { user }), (e) => {
      assert.ok(e instanceof sdk.NotEnoughSpaceError, `${e?.name}: ${e?.message}`);
      assert.ok(!(e instanceof sdk.RateLimitError));
      assert.match(e.message, /not enough disk space/);
      return true;
    });
  }
  // The failed uploads left nothing behind; a small file still fits.
  assert.deepEqual(fs.readdirSync(dir), []);
  await sbx.files.write(path.join(dir, 'small.txt'), 'fits', { user: 'user' });
  assert.equal(fs.readFileSync(path.join(dir, 'small.txt'), 'utf8'), 'fits');
});

test(`[${sdkName}] out of inodes: uploads are NotEnoughSpaceError, RPCs no rate limit`, opt, async () => {
  // Room for the root directory and two more inodes.
  const dir = smallFs('inodes', 'size=1m,nr_inodes=3,mode=1777');
  await sbx.files.makeDir(path.join(dir, 'a'), { user: 'user' });
  await sbx.files.makeDir(path.join(dir, 'b'), { user: 'user' });
  await assert.rejects(sbx.files.makeDir(path.join(dir, 'c'), { user: 'user' }), (e) => {
    assert.ok(e instanceof sdk.SandboxError, `${e?.name}: ${e?.message}`);
    assert.ok(!(e instanceof sdk.RateLimitError), `${e.name}: ${e.message}`);
    assert.match(e.message, /not enough disk space/);
    return true;
  });
  await assert.rejects(sbx.files.write(path.join(dir, 'f.txt'), 'x', { user: 'user' }), (e) => {
    assert.ok(e instanceof sdk.NotEnoughSpaceError, `${e?.name}: ${e?.message}`);
    return true;
  });
});

test(`[${sdkName}] a read-only file system is a permission error, not out of space`, opt, async () => {
  const dir = smallFs('readonly', 'size=64k,mode=1777,ro');
  for (const user of ['user', 'root']) {
    await assert.rejects(sbx.files.write(path.join(dir, 'f.txt'), 'x', { user }), (e) => {
      assert.ok(e instanceof sdk.SandboxError, `${e?.name}: ${e?.message}`);
      assert.ok(!(e instanceof sdk.NotEnoughSpaceError) && !(e instanceof sdk.RateLimitError), `${e.name}: ${e.message}`);
      assert.match(e.message, /^403: .*EROFS \(Read-only file system\)/);
      return true;
    });
    await assert.rejects(sbx.files.makeDir(path.join(dir, 'd'), { user }), (e) => {
      assert.ok(!(e instanceof sdk.RateLimitError) && !(e instanceof sdk.NotEnoughSpaceError), `${e.name}: ${e.message}`);
      assert.match(e.message, /permission_denied.*EROFS/);
      return true;
    });
  }
});
