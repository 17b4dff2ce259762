// Unit tests for the report entries beside the series list (src/reports.js).
// Run with node's own runner: `node --test viewer/test/`.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { parseReports, sideEntries } from '../src/reports.js';

// The catalogue the bundle carries (src/i18n.js), read here without the bundler.
const catalogue = JSON.parse(readFileSync(new URL('../../emr/i18n/vi.json', import.meta.url), 'utf-8'));

// What study.js describeSeries makes of a series.
function series(uid, modality, number, description = '') {
  return { uid, modality, number, description, count: 1, isImage: !['DOC', 'SR', 'PR'].includes(modality) };
}

// The study after "sign, amend, sign again": the CT and one Encapsulated PDF
// series per signed version, alike (the signing workflow's series number 9901).
const CT = series('1.2.3.1', 'CT', 1, 'Sọ não');
const DOC_V1 = series('1.2.3.9901.1', 'DOC', 9901, 'Kết quả chẩn đoán hình ảnh');
const DOC_V2 = series('1.2.3.9901.2', 'DOC', 9901, 'Kết quả chẩn đoán hình ảnh');
const SOPS = new Map([
  [DOC_V1.uid, ['1.2.3.9901.1.1']],
  [DOC_V2.uid, ['1.2.3.9901.2.1']],
]);
const EMR = {
  reports: [
    { version: 1, current: false, url: '/signing/documents/7/versions/1/pdf', sop_instance_uid: '1.2.3.9901.1.1', in_pacs: true },
    { version: 2, current: true, url: '/signing/documents/7/versions/2/pdf', sop_instance_uid: '1.2.3.9901.2.1', in_pacs: true },
  ],
};

const shown = (entries) => entries.map((e) => [e.kind, e.key, e.href ?? null, e.params?.version ?? null]);

test('an amended report: one link to the version in force, the old one labelled superseded', () => {
  const entries = sideEntries([CT, DOC_V1, DOC_V2], parseReports(EMR), SOPS);
  assert.deepEqual(shown(entries), [
    ['link', 'viewer.series.document', '/signing/documents/7/versions/2/pdf', null],
    ['link', 'viewer.report.superseded', '/signing/documents/7/versions/1/pdf', 1],
  ]);
  assert.equal(entries.filter((e) => e.key === 'viewer.series.document').length, 1);
  assert.ok(entries.every((e) => e.kind === 'link'), 'no disabled entry is left for the two DOC series');
  assert.deepEqual(entries[0].title, { key: 'viewer.report.current_title', params: { version: 2 } });
});

test('signed but the PDF not yet in the PACS: the EMR still links the version in force', () => {
  const emr = { reports: [{ version: 1, current: true, url: '/signing/documents/7/versions/1/pdf', sop_instance_uid: null, in_pacs: false }] };
  const entries = sideEntries([CT], parseReports(emr), new Map());
  assert.deepEqual(shown(entries), [['link', 'viewer.series.document', '/signing/documents/7/versions/1/pdf', null]]);
});

test('amendment signed, its PDF not stored yet: the stored old version is never shown as the report', () => {
  const emr = {
    reports: [
      { version: 2, current: true, url: '/signing/documents/7/versions/2/pdf', sop_instance_uid: null, in_pacs: false },
      EMR.reports[0],
    ],
  };
  const entries = sideEntries([CT, DOC_V1], parseReports(emr), new Map([[DOC_V1.uid, SOPS.get(DOC_V1.uid)]]));
  assert.deepEqual(shown(entries), [
    ['link', 'viewer.series.document', '/signing/documents/7/versions/2/pdf', null],
    ['link', 'viewer.report.superseded', '/signing/documents/7/versions/1/pdf', 1],
  ]);
});

test('no answer from the EMR (share link, no session): the DOC series make one entry, not one each', () => {
  const entries = sideEntries([CT, DOC_V1, DOC_V2], null);
  assert.deepEqual(shown(entries), [['label', 'viewer.series.document', null, null]]);
  assert.deepEqual(entries[0].series, [DOC_V1.uid, DOC_V2.uid]);
  assert.deepEqual(entries[0].title, { key: 'viewer.report.open_in_emr', params: {} });
});

test('a PDF series the EMR does not know stays a labelled entry of its own kind', () => {
  const foreign = series('1.9.9', 'DOC', 50, 'Phiếu chỉ định scan');
  const entries = sideEntries([CT, DOC_V1, DOC_V2, foreign], parseReports(EMR), new Map([...SOPS, [foreign.uid, ['1.9.9.1']]]));
  assert.deepEqual(shown(entries).at(-1), ['label', 'viewer.series.document_other', null, null]);
  assert.deepEqual(entries.at(-1).series, [foreign.uid]);
  assert.equal(entries.length, 3);
});

test('other non-image series keep their modality and description', () => {
  const sr = series('1.2.3.5', 'SR', 5, 'Đo đạc');
  const entries = sideEntries([CT, sr], parseReports({ reports: [] }));
  assert.deepEqual(entries.map((e) => [e.kind, e.text]), [['label', 'SR Đo đạc']]);
});

test('only same-origin paths from the answer become links', () => {
  const bad = {
    reports: [
      { version: 3, current: true, url: 'https://evil.example/x.pdf' },
      { version: 2, current: false, url: '//evil.example/x.pdf' },
      { version: 1, current: false, url: 'javascript:alert(1)' },
      { version: 'x', current: false, url: '/a' },
    ],
  };
  assert.deepEqual(parseReports(bad), []);
  assert.equal(parseReports({}), null);
  assert.equal(parseReports(null), null);
});

test('before the EMR answered, the DOC series show nothing (no entry that then turns into another)', () => {
  const sr = series('1.2.3.5', 'SR', 5, 'Đo đạc');
  const entries = sideEntries([CT, DOC_V1, DOC_V2, sr], undefined);
  assert.deepEqual(entries.map((e) => e.text ?? e.key), ['SR Đo đạc']);
});

test('a superseded version is called the old one, replaced, in the chart\'s words; never "the amended version"', () => {
  const label = catalogue['viewer.report.superseded'].replace('{version}', '1');
  assert.equal(label, 'Bản cũ — phiên bản 1 (đã được thay thế)');
  // The chart's status of a replaced version (documents.vstatus.superseded: "Đã được thay thế").
  assert.ok(label.includes(catalogue['documents.vstatus.superseded'].toLowerCase()), label);
  assert.ok(!label.includes('sửa đổi'), 'the amendment is the version in force, not the old one');
});
