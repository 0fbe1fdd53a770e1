// coppice-interp's languages besides Python, on the host, through the
// unmodified @e2b/code-interpreter SDK (debug mode, sandboxUrl): for each of
// javascript, typescript, bash, java and r, state across runs, stdout, an
// error with name/value/traceback, env vars per run, a context's cwd, a
// timeout that interrupts the run (and the context still works after it), and
// a restart that forgets the state. A language whose tools the host lacks
// (node + acorn, typescript, a JDK, R + IRkernel) skips with the reason.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { interpSkipReason, startInterp } from './lib/interp.mjs';
import { pidsMatching } from './lib/harness.mjs';

const baseSkip = interpSkipReason(['ipykernel']);

function has(cmd, args) {
  try {
    execFileSync(cmd, args, { stdio: 'ignore', timeout: 60000 });
    return true;
  } catch {
    return false;
  }
}
const nodeModule = (name) => ['/usr/share/nodejs', '/usr/lib/nodejs'].some((d) => fs.existsSync(path.join(d, name, 'package.json')));

// Per language: the code for each check, and what the host needs.
const langs = {
  javascript: {
    need: () => (nodeModule('acorn') ? null : 'no acorn in /usr/share/nodejs (Debian: node-acorn)'),
    set: 'let n = 41', get: 'n + 1', got: (e) => e.text, want: '42',
    print: 'console.log("hi")',
    fail: 'throw new TypeError("bad")', errName: 'TypeError', errValue: 'bad',
    env: 'process.env.FOO', envDefault: "process.env.FOO || 'default'", envGot: (e) => e.text, envWant: ['bar', 'default'],
    cwd: 'process.cwd()', cwdGot: (e) => e.text,
    slow: 'await new Promise((r) => setTimeout(r, 30000))',
    missingName: 'ReferenceError',
  },
  typescript: {
    need: () => (nodeModule('acorn') && nodeModule('typescript') ? null : 'no acorn and typescript in /usr/share/nodejs (Debian: node-acorn, node-typescript)'),
    set: 'const n: number = 41', get: 'n + 1', got: (e) => e.text, want: '42',
    print: 'const m: string = "hi"; console.log(m)',
    fail: 'throw new TypeError("bad")', errName: 'TypeError', errValue: 'bad',
    env: 'process.env.FOO', envDefault: "process.env.FOO || 'default'", envGot: (e) => e.text, envWant: ['bar', 'default'],
    cwd: 'process.cwd()', cwdGot: (e) => e.text,
    slow: 'while (true) {}',
    missingName: 'ReferenceError',
  },
  bash: {
    need: () => null,
    set: 'N=41', get: 'echo $((N + 1))', got: (e) => e.logs.stdout.join(''), want: '42\n',
    print: 'echo hi',
    fail: 'ls /no/such/file', errName: 'Error', errValue: 'exit status 2',
    env: 'echo $FOO', envDefault: 'echo ${FOO:-default}', envGot: (e) => e.logs.stdout.join(''), envWant: ['bar\n', 'default\n'],
    cwd: 'pwd', cwdGot: (e) => e.logs.stdout.join('').trim(),
    slow: 'sleep 30',
    // After a restart the variable is gone: `echo $((N + 1))` prints 1.
    afterRestart: (e) => assert.equal(e.logs.stdout.join(''), '1\n'),
  },
  java: {
    need: () => (has('java', ['-version']) ? null : 'no java (Debian: openjdk-17-jdk-headless)'),
    set: 'int n = 41;', get: 'n + 1', got: (e) => e.text, want: '42',
    print: 'System.out.println("hi");',
    fail: 'Integer.parseInt("zz")', errName: 'java.lang.NumberFormatException', errValue: 'For input string: "zz"',
    env: 'System.getProperty("FOO")', envDefault: 'System.getProperty("FOO", "default")', envGot: (e) => e.text, envWant: ['bar', 'default'],
    cwd: 'System.getProperty("user.dir")', cwdGot: (e) => e.text,
    slow: 'Thread.sleep(30000);',
    missingName: 'CompilationError',
  },
  r: {
    need: () => (has('R', ['--slave', '-e', 'library(IRkernel)']) ? null : 'no R with IRkernel (Debian: r-base-core, r-cran-irkernel)'),
    set: 'n <- 41', get: 'n + 1', got: (e) => e.results[0]?.text, want: '[1] 42',
    print: 'cat("hi\\n")',
    fail: 'stop("bad")', errName: 'ERROR', errValue: /bad/,
    env: 'Sys.getenv("FOO")', envDefault: 'Sys.getenv("FOO", unset = "default")', envGot: (e) => e.results[0]?.text, envWant: ['[1] "bar"', '[1] "default"'],
    cwd: 'getwd()', cwdGot: (e) => e.results[0]?.text.replace(/^\[1\] "(.*)"$/, '$1'),
    slow: 'Sys.sleep(30)',
    missingName: 'ERROR',
  },
};

let server, url, dir, sbx;
before(async () => {
  if (baseSkip) return;
  server = await startInterp();
  ({ url, dir, sbx } = server);
});
after(async () => { await server?.stop(); });

const opt = baseSkip ? { skip: baseSkip } : {};
test('the default contexts are python and javascript; unknown languages get 400 naming the served ones', opt, async () => {
  // The probe (a template's ready_cmd) answered only once the javascript
  // kernel was up too: its node process is there.
  if (!langs.javascript.need()) {
    const cmdlines = pidsMatching(dir).map((p) => { try { return fs.readFileSync(`/proc/${p}/cmdline`, 'utf8'); } catch { return ''; } });
    assert.ok(cmdlines.some((c) => c.includes('js_driver.js')), 'no node driver running after the probe');
  }
  const list = await sbx.listCodeContexts();
  assert.deepEqual(list.map((c) => c.language), ['python', 'javascript']);
  for (const body of [{ code: '1', language: 'cobol' }]) {
    const r = await fetch(`${url}/execute`, { method: 'POST', body: JSON.stringify(body) });
    assert.equal(r.status, 400);
    assert.match(await r.text(), /Unsupported language 'cobol'.*javascript.*bash/);
  }
  const c = await fetch(`${url}/contexts`, { method: 'POST', body: JSON.stringify({ language: 'cobol' }) });
  assert.equal(c.status, 400);
});

const jsSkip = baseSkip || langs.javascript.need();
test('language: "js" without a context runs in the default javascript context', jsSkip ? { skip: jsSkip } : {}, async () => {
  const jsDefault = (await sbx.listCodeContexts()).find((c) => c.language === 'javascript');
  await sbx.runCode('globalThis.marker = 7', { language: 'js' });
  const e = await sbx.runCode('marker * 6', { context: jsDefault });
  assert.equal(e.text, '42');
  const esm = await sbx.runCode("import { readFileSync } from 'fs'\nconsole.log(typeof readFileSync)", { language: 'javascript' });
  assert.deepEqual(esm.logs.stdout, ['function\n']);
  const awaited = await sbx.runCode("await Promise.resolve('Hello World!')", { language: 'js' });
  assert.equal(awaited.text, 'Hello World!');
});

for (const [lang, L] of Object.entries(langs)) {
  const skip = baseSkip || L.need();
  test(`${lang}: state, stdout, error, env, cwd, timeout interrupt, restart`, { ...(skip ? { skip } : {}), timeout: 240000 }, async () => {
    const cwd = path.join(dir, `cwd-${lang}`);
    fs.mkdirSync(cwd, { recursive: true });
    let t = Date.now();
    const ctx = await sbx.createCodeContext({ language: lang, cwd });
    const startMs = Date.now() - t;
    assert.equal(ctx.language, lang);
    assert.equal(ctx.cwd, cwd);
    // state across runs
    let e = await sbx.runCode(L.set, { context: ctx });
    assert.equal(e.error, undefined, JSON.stringify(e.error));
    e = await sbx.runCode(L.get, { context: ctx });
    assert.equal(L.got(e), L.want);
    // stdout, streamed
    const out = [];
    e = await sbx.runCode(L.print, { context: ctx, onStdout: (m) => out.push(m.line) });
    assert.deepEqual(e.logs.stdout, ['hi\n']);
    assert.deepEqual(out, ['hi\n']);
    // an error with name, value and traceback
    e = await sbx.runCode(L.fail, { context: ctx });
    assert.ok(e.error, `${lang}: no error`);
    assert.equal(e.error.name, L.errName);
    if (L.errValue instanceof RegExp) assert.match(e.error.value, L.errValue);
    else assert.equal(e.error.value, L.errValue);
    assert.equal(typeof e.error.traceback, 'string');
    // env vars for one run only
    e = await sbx.runCode(L.env, { context: ctx, envs: { FOO: 'bar' } });
    assert.equal(L.envGot(e), L.envWant[0]);
    e = await sbx.runCode(L.envDefault, { context: ctx });
    assert.equal(L.envGot(e), L.envWant[1]);
    // the context's cwd
    e = await sbx.runCode(L.cwd, { context: ctx });
    assert.equal(L.cwdGot(e), cwd);
    // a timeout interrupts the run; the context and its state survive
    t = Date.now();
    await assert.rejects(sbx.runCode(L.slow, { context: ctx, timeoutMs: 2000 }), { name: 'TimeoutError' });
    e = await sbx.runCode(L.get, { context: ctx, timeoutMs: 30000 });
    assert.equal(L.got(e), L.want, `${lang}: state lost after an interrupt: ${JSON.stringify(e)}`);
    assert.ok(Date.now() - t < 20000, `${lang}: the interrupt took ${Date.now() - t} ms`);
    // restart forgets the state
    await sbx.restartCodeContext(ctx);
    e = await sbx.runCode(L.get, { context: ctx });
    if (L.afterRestart) L.afterRestart(e);
    else assert.equal(e.error?.name, L.missingName, JSON.stringify(e.error ?? e.results));
    await sbx.removeCodeContext(ctx);
    console.log(`# ${lang}: context start ${startMs} ms`);
  });
}

// IRkernel aborts whatever reaches it right after an error or an interrupt,
// even with stop_on_error off; such a run never started, and is sent again.
const rSkip = baseSkip || langs.r.need();
test('r: a run queued behind an interrupted run is not aborted', rSkip ? { skip: rSkip } : {}, async () => {
  const ctx = await sbx.createCodeContext({ language: 'r' });
  await sbx.runCode('n <- 41', { context: ctx });
  for (let i = 0; i < 3; i++) {
    const [slow, next] = await Promise.all([
      sbx.runCode('Sys.sleep(30)', { context: ctx, timeoutMs: 1500 }).catch((e) => e),
      sbx.runCode('n + 1', { context: ctx }),
    ]);
    assert.equal(slow.name, 'TimeoutError');
    assert.equal(next.error, undefined, JSON.stringify(next.error));
    assert.equal(next.results[0]?.text, '[1] 42');
  }
  await sbx.removeCodeContext(ctx);
});

test('bash `exit` and node `process.exit()` end the run with ContextRestarting; the context goes on', jsSkip ? { skip: jsSkip } : {}, async () => {
  for (const [language, code, status] of [['bash', 'echo before; exit 3', 3], ['javascript', 'process.exit(1)', 1]]) {
    const ctx = await sbx.createCodeContext({ language });
    const e = await sbx.runCode(code, { context: ctx });
    assert.equal(e.error?.name, 'ContextRestarting');
    assert.match(e.error.value, new RegExp(`exited \\(status ${status}\\).*state was lost`));
    const next = await sbx.runCode(language === 'bash' ? 'echo alive' : '"alive"', { context: ctx });
    assert.equal(language === 'bash' ? next.logs.stdout.join('') : next.text, language === 'bash' ? 'alive\n' : 'alive');
    await sbx.removeCodeContext(ctx);
  }
  // A promise the cell rejects without handling is reported in that run.
  const e = await sbx.runCode('Promise.reject(new Error("late")); 5', { language: 'js' });
  assert.equal(e.text, '5');
  assert.match(e.logs.stderr.join(''), /Uncaught \(in promise\) Error: late/);
});
