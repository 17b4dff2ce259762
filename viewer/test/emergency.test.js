// Unit tests for the emergency-access banner's content (src/emergency.js).
// Run with node's own runner: `node --test viewer/test/`.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { parseGrants, bannerModel } from '../src/emergency.js';

// The catalogue the bundle carries (src/i18n.js), read here without the bundler.
const catalogue = JSON.parse(readFileSync(new URL('../../emr/i18n/vi.json', import.meta.url), 'utf-8'));
const t = (key, params = {}) =>
  (catalogue[key] ?? key).replace(/\{(\w+)\}/g, (whole, name) => (name in params ? String(params[name]) : whole));

const EMR = {
  grants: [
    { patient_id: 7, patient_name: 'Lý Thị Khẩn', patient_code: 'BN00000007', chart_url: '/patients/7',
      expires_at: '2026-12-08T10:15:00+07:00', until: '08/12/2026 10:15' },
    { patient_id: 9, patient_name: 'Đào Văn Cấp', patient_code: 'BN00000009', chart_url: '//evil.example/x',
      expires_at: '2026-12-08T12:00:00+07:00', until: '08/12/2026 12:00' },
  ],
};

test('each patient covered, with its code and the end as the EMR gives it (facility time)', () => {
  const grants = parseGrants(EMR);
  assert.deepEqual(grants, [
    { name: 'Lý Thị Khẩn', code: 'BN00000007', until: '08/12/2026 10:15', href: '/patients/7' },
    { name: 'Đào Văn Cấp', code: 'BN00000009', until: '08/12/2026 12:00', href: null }, // never another site
  ]);
  const model = bannerModel(grants, t);
  assert.equal(model.title, catalogue['care.banner.title']);
  assert.equal(model.logged, catalogue['care.banner.logged']);
  assert.match(model.logged, /ghi nhật ký/);
  assert.deepEqual(model.lines[0], {
    name: 'Lý Thị Khẩn',
    href: '/patients/7',
    detail: `(${catalogue['care.banner.code'].replace('{code}', 'BN00000007')}) · ${catalogue['care.banner.until'].replace('{at}', '08/12/2026 10:15')}`,
  });
  assert.ok(!model.lines.some((l) => /\{\w+\}/.test(l.detail)), 'every placeholder is filled');
});

test('no access, no answer or a malformed one: no banner', () => {
  for (const body of [{ grants: [] }, null, undefined, {}, { grants: 'x' }, { grants: [{ patient_name: 'A' }] }]) {
    assert.deepEqual(parseGrants(body), []);
    assert.equal(bannerModel(parseGrants(body), t), null);
  }
});
