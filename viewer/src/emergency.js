// The banner of the user's emergency (break-the-glass) accesses in force,
// as every EMR page shows it (emr/templates/base.html): the patients it
// covers, when each access ends (facility time, as the EMR gives it) and
// that every access is logged and reviewed. The EMR answers
// GET /break-glass/mine (same origin, session cookie) with the logged-in
// user's own accesses only.
//
// Plain functions of their arguments (no DOM, no fetch), so that
// `node --test viewer/test/` can exercise them; `t` is the catalogue lookup.

export const GRANTS_ROOT = '/break-glass/mine';

// Same-origin absolute path, never "//host" or a scheme.
function localPath(value) {
  return typeof value === 'string' && /^\/(?!\/)[^\s\\]*$/.test(value);
}

const text = (value) => (typeof value === 'string' ? value.trim() : '');

// The EMR's answer, checked: [{ name, code, until, href }] in the EMR's
// order (soonest ending first); [] when there is nothing to show (no
// access, no answer, a malformed one).
export function parseGrants(body) {
  if (!body || !Array.isArray(body.grants)) return [];
  const out = [];
  for (const g of body.grants) {
    const name = text(g?.patient_name);
    const until = text(g?.until);
    if (!name || !until) continue;
    out.push({ name, code: text(g.patient_code), until, href: localPath(g.chart_url) ? g.chart_url : null });
  }
  return out;
}

// What the banner says, or null (no banner): { title, lines: [{ name,
// href, detail }], logged } in the catalogue's words.
export function bannerModel(grants, t) {
  if (!grants?.length) return null;
  return {
    title: t('care.banner.title'),
    lines: grants.map((g) => ({
      name: g.name,
      href: g.href,
      detail: [g.code ? `(${t('care.banner.code', { code: g.code })})` : '', t('care.banner.until', { at: g.until })]
        .filter(Boolean)
        .join(' · '),
    })),
    logged: t('care.banner.logged'),
  };
}
