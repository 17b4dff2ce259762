// The viewer's words come from the shared catalogue (emr/i18n/vi.json),
// bundled at build time so the EMR and the viewer never disagree.
import catalogue from '../../emr/i18n/vi.json';

export function t(key, params = {}) {
  const text = catalogue[key] ?? key;
  return text.replace(/\{(\w+)\}/g, (whole, name) =>
    Object.prototype.hasOwnProperty.call(params, name) ? String(params[name]) : whole,
  );
}
