// Measurement labels (src/labels.js): Vietnamese words, units and numbers.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { ellipseLines, lengthLines, angleLines, formatNumber, unitText } from '../src/labels.js';

const catalogue = JSON.parse(readFileSync(new URL('../../emr/i18n/vi.json', import.meta.url), 'utf8'));
const t = (key) => {
  assert.ok(key in catalogue, `missing catalogue key ${key}`);
  return catalogue[key];
};

test('elliptical ROI: area, mean, max, min and standard deviation in Vietnamese', () => {
  const lines = ellipseLines(
    { area: 153.938, mean: 40.2567, max: 48, min: 31.5, stdDev: 3.14159, areaUnit: 'mm²', modalityUnit: 'HU' },
    t,
  );
  assert.deepEqual(lines, [
    'Diện tích: 154 mm²',
    'Trung bình: 40,3 HU',
    'Lớn nhất: 48,0 HU',
    'Nhỏ nhất: 31,5 HU',
    'Độ lệch chuẩn: 3,14 HU',
  ]);
  assert.ok(!lines.join(' ').match(/Area|Mean|Max|Min|Std Dev/));
});

test('elliptical ROI: uncalibrated pixels and raw values say so in Vietnamese', () => {
  const lines = ellipseLines({ area: 12.5, mean: 100, areaUnit: 'px²', modalityUnit: 'raw' }, t);
  assert.deepEqual(lines, [`Diện tích: 12,5 ${catalogue['viewer.unit.px2']}`, `Trung bình: 100 ${catalogue['viewer.unit.raw']}`]);
  assert.deepEqual(ellipseLines({ mean: 7, modalityUnit: '' }, t), ['Trung bình: 7,00']);
  assert.deepEqual(ellipseLines({ area: 0, isEmptyArea: true }, t), [`Diện tích: ${catalogue['viewer.measure.oblique']}`]);
  assert.deepEqual(ellipseLines(undefined, t), []);
  assert.deepEqual(ellipseLines({ mean: NaN }, t), []);
});

test('length and angle', () => {
  assert.deepEqual(lengthLines({ length: 8.04, unit: 'mm' }, t), ['8,04 mm']);
  assert.deepEqual(lengthLines({ length: 33, unit: 'px' }, t), [`33,0 ${catalogue['viewer.unit.px']}`]);
  assert.equal(lengthLines({ length: NaN, unit: 'mm' }, t), undefined);
  assert.deepEqual(angleLines({ angle: 90 }, t), ['90,0°']);
  assert.deepEqual(angleLines({ angle: NaN }, t), [catalogue['viewer.measure.no_angle']]);
  assert.equal(angleLines({}, t), undefined);
});

test('numbers: decimal comma, precision by size, no negative zero', () => {
  assert.equal(formatNumber(1234.56), '1235');
  assert.equal(formatNumber(-600), '-600');
  assert.equal(formatNumber(12.345), '12,3');
  assert.equal(formatNumber(0.004), '0,00');
  assert.equal(formatNumber(-0.001), '0,00');
  assert.equal(unitText('unitless', t), '');
  assert.equal(unitText('SUV', t), 'SUV');
});
