// Unit tests for the rules early.js and the bundle share (src/rules.js).
// Run with node's own runner: `node --test viewer/test/` (make test runs
// it through tests/viewer/test_node_unit.py).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  readConfig,
  pickFirstSeries,
  orderInstances,
  isImageSeries,
  tagValue,
  PRESETS,
  voiRange,
  centerWidth,
  presetForKey,
} from '../src/rules.js';

const ORIGIN = 'https://pacs.benhvien.vn';

function series(uid, number, modality = 'CT') {
  const item = { '0020000E': { vr: 'UI', Value: [uid] }, '00080060': { vr: 'CS', Value: [modality] } };
  if (number !== undefined) item['00200011'] = { vr: 'IS', Value: [number] };
  return item;
}

function instance(number, position, orientation = [1, 0, 0, 0, 1, 0]) {
  const item = { '00200013': { vr: 'IS', Value: [number] }, '00080018': { vr: 'UI', Value: [`1.2.${number}`] } };
  if (position) item['00200032'] = { vr: 'DS', Value: position };
  if (orientation) item['00200037'] = { vr: 'DS', Value: orientation };
  return item;
}

const numbers = (list) => list.map((m) => tagValue(m, '00200013'));

test('config: defaults without parameters', () => {
  assert.deepEqual(readConfig('', ORIGIN), {
    study: '',
    token: '',
    series: '',
    render: '',
    root: '/dicomweb',
    measurementsRoot: '/reading/measurements',
    absoluteRoot: `${ORIGIN}/dicomweb`,
  });
});

test('config: study, series, token, render and a same-origin DICOMweb root', () => {
  const c = readConfig('?study=1.2.3&series=1.2.3.4&token=abc&render=cpu&dicomweb=/pacs/dicomweb//', ORIGIN);
  assert.equal(c.study, '1.2.3');
  assert.equal(c.series, '1.2.3.4');
  assert.equal(c.token, 'abc');
  assert.equal(c.render, 'cpu');
  assert.equal(c.root, '/pacs/dicomweb');
  assert.equal(c.absoluteRoot, `${ORIGIN}/pacs/dicomweb`);
});

test('config: a DICOMweb or measurements root on another host is refused (the token must stay here)', () => {
  for (const bad of ['https://evil.example/dicomweb', '//evil.example/dicomweb', 'dicomweb', 'javascript:alert(1)']) {
    const c = readConfig(`?study=1&dicomweb=${encodeURIComponent(bad)}&measurements=${encodeURIComponent(bad)}`, ORIGIN);
    assert.equal(c.root, '/dicomweb', bad);
    assert.equal(c.measurementsRoot, '/reading/measurements', bad);
  }
  assert.equal(readConfig('?measurements=/m/', ORIGIN).measurementsRoot, '/m');
});

test('config: an unknown renderer is ignored', () => {
  assert.equal(readConfig('?render=webgpu', ORIGIN).render, '');
  assert.equal(readConfig('?render=gpu', ORIGIN).render, 'gpu');
});

test('first series: the lowest series number among image series', () => {
  const list = [series('1.9', 3), series('1.8', 2), series('1.7', 10)];
  assert.equal(pickFirstSeries(list), '1.8');
});

test('first series: reports, SR and presentation states never open first', () => {
  const list = [series('1.1', 1, 'SR'), series('1.2', 0, 'DOC'), series('1.3', 9901, 'PR'), series('1.4', 5, 'MR')];
  assert.equal(pickFirstSeries(list), '1.4');
  assert.equal(isImageSeries(series('x', 1, 'KO')), false);
  assert.equal(isImageSeries(series('x', 1, 'US')), true);
});

test('first series: series without a number come last, ties by UID, whatever the list order', () => {
  const a = [series('1.5'), series('1.4', 7), series('1.3', 7)];
  assert.equal(pickFirstSeries(a), '1.3');
  assert.equal(pickFirstSeries(a.slice().reverse()), '1.3');
  assert.equal(pickFirstSeries([series('1.9'), series('1.2')]), '1.2');
  assert.equal(pickFirstSeries([series('2.1', 'x'), series('2.0', 4)]), '2.0');
});

test('first series: none when the study has no image series', () => {
  assert.equal(pickFirstSeries([]), null);
  assert.equal(pickFirstSeries(undefined), null);
  assert.equal(pickFirstSeries([series('1.1', 1, 'SR')]), null);
  assert.equal(pickFirstSeries([{ '00080060': { Value: ['CT'] } }]), null);
});

test('slice order: axial slices head first by position, whatever the instance numbers', () => {
  // Instance numbers run feet to head here; z (LPS, +z towards the head) decides.
  const list = [instance(1, [0, 0, -20]), instance(2, [0, 0, 0]), instance(3, [0, 0, -10])];
  assert.deepEqual(numbers(orderInstances(list)), [2, 3, 1]);
});

test('slice order: along the slice normal for oblique and sagittal stacks', () => {
  // Sagittal: rows along +y, columns along -z; the normal is -x... (y × -z).
  const sag = [0, 1, 0, 0, 0, -1];
  const list = [instance(1, [10, 0, 0], sag), instance(2, [-10, 0, 0], sag), instance(3, [0, 0, 0], sag)];
  // normal = (1*-1 - 0*0, 0*0 - 0*-1, 0*0 - 1*0) = (-1, 0, 0): the highest projection is x = -10.
  assert.deepEqual(numbers(orderInstances(list)), [2, 3, 1]);
});

test('slice order: equal positions fall back to instance number, and it is stable', () => {
  const list = [instance(3, [0, 0, 5]), instance(1, [0, 0, 5]), instance(2, [0, 0, 5])];
  assert.deepEqual(numbers(orderInstances(list)), [1, 2, 3]);
});

test('slice order: by instance number when any instance lacks geometry', () => {
  const list = [instance(3, [0, 0, 1]), instance(1, null), instance(2, [0, 0, 3])];
  assert.deepEqual(numbers(orderInstances(list)), [1, 2, 3]);
  assert.deepEqual(numbers(orderInstances([instance(2, null, null), instance(1, null, null)])), [1, 2]);
});

test('slice order: does not modify its input; empty input gives an empty list', () => {
  const list = [instance(2, [0, 0, 1]), instance(1, [0, 0, 2])];
  const copy = list.slice();
  orderInstances(list);
  assert.deepEqual(list, copy);
  assert.deepEqual(orderInstances([]), []);
});

test('presets: the CT windows radiologists expect', () => {
  const byKey = Object.fromEntries(PRESETS.map((p) => [p.key, [p.width, p.center]]));
  assert.deepEqual(byKey, {
    brain: [80, 40],
    lung: [1500, -600],
    bone: [1800, 400],
    abdomen: [400, 50],
    mediastinum: [350, 50],
  });
});

test('presets: VOI range and back', () => {
  assert.deepEqual(voiRange(-600, 1500), { lower: -1350, upper: 150 });
  for (const p of PRESETS) assert.deepEqual(centerWidth(voiRange(p.center, p.width)), { center: p.center, width: p.width });
  assert.equal(centerWidth(null), null);
});

test('presets: keys 1–5 choose them in order, other keys none', () => {
  assert.equal(presetForKey('1').key, 'brain');
  assert.equal(presetForKey('2').key, 'lung');
  assert.equal(presetForKey('5').key, 'mediastinum');
  assert.equal(presetForKey('6'), null);
  assert.equal(presetForKey('0'), null);
  assert.equal(presetForKey('a'), null);
});
