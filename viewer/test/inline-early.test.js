// The first stage is early.js + rules.js pasted into one classic script
// (src/inline-early.js): it must compile as a classic script, define no
// globals but window.filmlessEarly, and use the very rules of rules.js.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import vm from 'node:vm';
import { inlineEarlyCode, readEarlyCode } from '../src/inline-early.js';

const SRC = new URL('../src/', import.meta.url);

test('the inlined first stage is one classic script with the shared rules in it', () => {
  const code = readEarlyCode(SRC);
  assert.doesNotThrow(() => new vm.Script(code));
  assert.doesNotMatch(code, /^\s*(import|export)\b/m);
  assert.match(code, /function pickFirstSeries\(/);
  assert.match(code, /function orderInstances\(/);
});

test('without a study it defines only window.filmlessEarly and settles at once', async () => {
  const window = { location: { search: '', origin: 'http://x' }, fetch() {} };
  const sandbox = { window, URLSearchParams, Promise, setTimeout, document: {} };
  vm.runInNewContext(readEarlyCode(SRC), sandbox);
  assert.deepEqual(Object.keys(window).sort(), ['fetch', 'filmlessEarly', 'location']);
  assert.equal(await window.filmlessEarly.frameSettled, false);
  assert.equal(window.filmlessEarly.root, '/dicomweb');
});

test('the inliner refuses what it cannot paste', () => {
  const early = "import { readConfig } from './rules.js';\nreadConfig('');\n";
  assert.throws(() => inlineEarlyCode(early, "import x from 'y';\nexport function a() {}\n"), /must not import/);
  assert.throws(() => inlineEarlyCode(early, 'export default 1;\n'), /only use/);
  assert.throws(() => inlineEarlyCode('readConfig();\n', 'export function readConfig() {}\n'), /must import/);
  assert.throws(
    () => inlineEarlyCode(early + "import z from './z.js';\n", 'export function readConfig() {}\n'),
    /only from/,
  );
  assert.throws(() => inlineEarlyCode(early, "export const s = '</script>';\n"), /<\/script/);
  const code = inlineEarlyCode(early, 'export function readConfig() { return 1; }\n');
  assert.doesNotThrow(() => new vm.Script(code));
});
