// commands.* and the process service, through the real E2B SDK in debug mode.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { startEnvd, debugSandbox, loadSdk, sleep, pidsMatching, sdkName } from './lib/harness.mjs';

let envd, sbx, sdk;
before(async () => {
  envd = await startEnvd();
  sbx = await debugSandbox();
  sdk = await loadSdk();
});
after(async () => { await envd?.stop(); });

test(`[${sdkName}] run: stdout, stderr, exit code 0`, async () => {
  const r = await sbx.commands.run('echo hi; echo err >&2');
  assert.equal(r.exitCode, 0);
  assert.equal(r.stdout, 'hi\n');
  assert.equal(r.stderr, 'err\n');
});

test('run: streaming callbacks see output in order', async () => {
  const seen = [];
  await sbx.commands.run('for i in 1 2 3; do echo $i; sleep 0.05; done; echo e >&2', {
    onStdout: (d) => seen.push(['o', d]), onStderr: (d) => seen.push(['e', d]),
  });
  assert.equal(seen.filter(([k]) => k === 'o').map(([, d]) => d).join(''), '1\n2\n3\n');
  assert.deepEqual(seen.at(-1), ['e', 'e\n']);
});

test('run: non-zero exit raises CommandExitError with the code and output', async () => {
  await assert.rejects(sbx.commands.run('echo out; exit 3'), (err) => {
    assert.equal(err.constructor.name, 'CommandExitError');
    assert.equal(err.exitCode, 3);
    assert.equal(err.stdout, 'out\n');
    return true;
  });
});

test('run: binary-safe large output', async () => {
  const r = await sbx.commands.run('head -c 3000000 /dev/zero | tr "\\0" a');
  assert.equal(r.stdout.length, 3000000);
});

test('envs, cwd and the default user', async () => {
  const r = await sbx.commands.run('echo "$FOO|$HOME|$USER"; pwd; id -u', { envs: { FOO: 'bar baz' } });
  const [line, cwd, uid] = r.stdout.trim().split('\n');
  assert.equal(line, `bar baz|${envd.world.userHome}|user`);
  assert.equal(cwd, envd.world.userHome);
  assert.equal(Number(uid), envd.world.uid);
  const r2 = await sbx.commands.run('pwd', { cwd: '/tmp' });
  assert.equal(r2.stdout, '/tmp\n');
});

test('user option runs as that user (Authorization: Basic)', async () => {
  const r = await sbx.commands.run('id -u; echo $HOME', { user: 'root' });
  assert.deepEqual(r.stdout.trim().split('\n'), ['0', envd.world.rootHome]);
  // Supplementary groups come from the sandbox's own /etc/group.
  const g = await sbx.commands.run('id -G');
  assert.ok(g.stdout.trim().split(' ').includes('4242'), g.stdout);
});

test('relative cwd and ~ resolve against the home', async () => {
  await sbx.commands.run('mkdir -p sub');
  const r = await sbx.commands.run('pwd', { cwd: 'sub' });
  assert.equal(r.stdout, `${envd.world.userHome}/sub\n`);
  const r2 = await sbx.commands.run('pwd', { cwd: '~/sub' });
  assert.equal(r2.stdout, `${envd.world.userHome}/sub\n`);
});

test('background command: list, kill, wait reports the signal', async () => {
  const marker = `coppice-bg-${Date.now()}`;
  const h = await sbx.commands.run(`sleep 30 # ${marker}`, { background: true });
  assert.ok(h.pid > 0);
  const list = await sbx.commands.list();
  const mine = list.find((p) => p.pid === h.pid);
  assert.ok(mine, 'listed');
  assert.equal(mine.cmd, '/bin/bash');
  assert.deepEqual(mine.args, ['-l', '-c', `sleep 30 # ${marker}`]);
  assert.equal(await h.kill(), true);
  await assert.rejects(h.wait(), (err) => err.exitCode === -1 && /killed/.test(err.error));
  assert.deepEqual(pidsMatching(marker), []);
  assert.equal(await sbx.commands.kill(h.pid), false, 'killing an exited process returns false');
  assert.equal(await sbx.commands.kill(987654), false, 'killing an unknown pid returns false');
});

test('connect re-attaches to a running process; a disconnect does not kill it', async () => {
  const h = await sbx.commands.run('sleep 0.5; echo late; sleep 0.3; echo later', { background: true, timeoutMs: 0 });
  await h.disconnect();
  const h2 = await sbx.commands.connect(h.pid);
  const r = await h2.wait();
  assert.equal(r.exitCode, 0);
  assert.match(r.stdout, /later/);
  // An exited process can still be connected to for a while: start and end are replayed.
  const h3 = await sbx.commands.connect(h.pid);
  const r3 = await h3.wait();
  assert.equal(r3.exitCode, 0);
});

test('timeoutMs kills the process at its deadline', async () => {
  const marker = `coppice-timeout-${Date.now()}`;
  const t0 = Date.now();
  await assert.rejects(sbx.commands.run(`sleep 20 # ${marker}`, { timeoutMs: 700 }),
    (err) => err.constructor.name === 'TimeoutError');
  assert.ok(Date.now() - t0 < 5000);
  await sleep(100);
  assert.deepEqual(pidsMatching(marker), [], 'the process is gone');
});

test('sendStdin and closeStdin', async () => {
  const h = await sbx.commands.run('cat; echo done', { background: true, stdin: true });
  await sbx.commands.sendStdin(h.pid, 'hello ');
  await sbx.commands.sendStdin(h.pid, 'stdin\n');
  await sbx.commands.closeStdin(h.pid);
  const r = await h.wait();
  assert.equal(r.stdout, 'hello stdin\ndone\n');
});

test('commands without stdin get EOF at once', async () => {
  const r = await sbx.commands.run('cat; echo eof');
  assert.equal(r.stdout, 'eof\n');
});

test('orphans of a command are reaped (no zombies left)', async () => {
  await sbx.commands.run('(sleep 0.1 &) ; true');
  await sleep(400);
  const zombies = (await sbx.commands.run(`ps -o stat=,ppid= --ppid ${envd.proc.pid} || true`)).stdout
    .split('\n').filter((l) => l.trim().startsWith('Z'));
  assert.deepEqual(zombies, []);
});
