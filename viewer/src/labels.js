// The text Cornerstone's measuring tools draw beside a measurement
// (length, angle, elliptical ROI statistics), in Vietnamese with the
// catalogue's words and Vietnamese number formatting (decimal comma).
// Pure functions of their arguments (`t` is the catalogue lookup), unit-
// tested by viewer/test/labels.test.js.

// Units Cornerstone reports, in the reader's words; physical units and
// symbols (mm, mm², HU, SUV, °) are the same in Vietnamese.
const UNIT_KEYS = { px: 'viewer.unit.px', 'px²': 'viewer.unit.px2', voxels: 'viewer.unit.voxels', raw: 'viewer.unit.raw' };
const NO_UNIT = new Set(['', 'unitless', 'unknown']);

export function unitText(unit, t) {
  if (unit === undefined || unit === null || NO_UNIT.has(unit)) return '';
  const key = UNIT_KEYS[unit];
  return key ? t(key) : String(unit);
}

// 2 decimals below 10, 1 below 100, none above: the precision the pixel
// spacing supports; a decimal comma and no grouping (1234,5 not 1.234,5).
export function formatNumber(value) {
  const abs = Math.abs(value);
  const digits = abs >= 100 ? 0 : abs >= 10 ? 1 : 2;
  return value.toFixed(digits).replace('.', ',').replace(/^-(0(,0*)?)$/, '$1');
}

function withUnit(value, unit, t) {
  const u = unitText(unit, t);
  return u ? `${formatNumber(value)} ${u}` : formatNumber(value);
}

const isNumber = (v) => typeof v === 'number' && Number.isFinite(v);

export function ellipseLines(stats, t) {
  if (!stats) return [];
  const { area, mean, max, min, stdDev, isEmptyArea, areaUnit, modalityUnit } = stats;
  const lines = [];
  if (isNumber(area)) {
    lines.push(
      isEmptyArea
        ? `${t('viewer.measure.area')}: ${t('viewer.measure.oblique')}`
        : `${t('viewer.measure.area')}: ${withUnit(area, areaUnit, t)}`,
    );
  }
  for (const [key, value] of [['mean', mean], ['max', max], ['min', min], ['stdDev', stdDev]]) {
    if (isNumber(value)) lines.push(`${t(`viewer.measure.${key}`)}: ${withUnit(value, modalityUnit, t)}`);
  }
  return lines;
}

export function lengthLines(stats, t) {
  if (!stats || !isNumber(stats.length)) return undefined;
  return [withUnit(stats.length, stats.unit, t)];
}

export function angleLines(stats, t) {
  if (!stats || stats.angle === undefined || stats.angle === null) return undefined;
  if (!isNumber(stats.angle)) return [t('viewer.measure.no_angle')];
  return [`${formatNumber(stats.angle)}°`];
}
