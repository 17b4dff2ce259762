// The signed report beside the series list: one "Báo cáo (PDF)" link to the
// version in force, older (superseded) versions labelled as such.
//
// Why not from the DICOM series alone: the signing workflow stores every
// signed version in the study as an Encapsulated PDF of its own (a DOC
// series each, same series number and title), so after an amendment the
// PACS holds two alike series and nothing in them says which one stands.
// The EMR says it (GET /reading/reports/<StudyInstanceUID>, same origin,
// session cookie): each version with the EMR's PDF address, which checks the
// role and the patient's care again and audits the reading.
//
// Plain functions of their arguments (no DOM, no fetch), so that
// `node --test viewer/test/` can exercise them.

export const REPORTS_ROOT = '/reading/reports';

// Same-origin absolute path, never "//host" or a scheme.
function localPath(value) {
  return typeof value === 'string' && /^\/(?!\/)[^\s\\]*$/.test(value);
}

// The EMR's answer, checked: [{ version, current, url, sop, inPacs }] newest
// first, or null when there is no usable answer (share link, no EMR, refused).
export function parseReports(body) {
  if (!body || !Array.isArray(body.reports)) return null;
  const out = [];
  for (const r of body.reports) {
    const version = Number(r?.version);
    if (!Number.isInteger(version) || version < 1 || !localPath(r.url)) continue;
    out.push({
      version,
      current: r.current === true,
      url: r.url,
      sop: typeof r.sop_instance_uid === 'string' ? r.sop_instance_uid : null,
      inPacs: r.in_pacs === true,
    });
  }
  out.sort((a, b) => b.version - a.version);
  return out;
}

// The DOC series whose instances are all known report versions; `sopsBySeries`:
// series UID -> its SOP Instance UIDs (absent: not looked up or failed).
function reportSeries(docSeries, reports, sopsBySeries) {
  const known = new Set(reports.map((r) => r.sop).filter(Boolean));
  const out = new Set();
  for (const s of docSeries) {
    const sops = sopsBySeries?.get(s.uid);
    if (sops && sops.length && sops.every((sop) => known.has(sop))) out.add(s.uid);
  }
  return out;
}

// The entries after the image thumbnails, for every non-image series and
// the report. Each: { kind: 'link' | 'label', key, params, href?, title?,
// current?, series? } — `key`/`params` name the text in the catalogue.
//   seriesList: the study's series (study.js describeSeries);
//   reports: parseReports(...), null (no answer: a share link, no EMR) or
//     undefined (not asked yet: the DOC series wait for the answer, so no
//     entry shows and then changes into another);
//   sopsBySeries: Map of a DOC series' UID to its SOP Instance UIDs.
export function sideEntries(seriesList, reports, sopsBySeries = new Map()) {
  const entries = [];
  const nonImage = seriesList.filter((s) => !s.isImage);
  const docs = nonImage.filter((s) => s.modality === 'DOC');
  let absorbed = new Set();
  if (reports) {
    const current = reports.find((r) => r.current);
    if (current) {
      entries.push({
        kind: 'link',
        key: 'viewer.series.document',
        params: {},
        title: { key: 'viewer.report.current_title', params: { version: current.version } },
        href: current.url,
        current: true,
        version: current.version,
      });
    }
    for (const r of reports) {
      if (r === current) continue;
      entries.push({
        kind: 'link',
        key: 'viewer.report.superseded',
        params: { version: r.version },
        title: { key: 'viewer.report.superseded_title', params: { version: r.version } },
        href: r.url,
        current: false,
        version: r.version,
      });
    }
    absorbed = reportSeries(docs, reports, sopsBySeries);
  }
  // Document series the EMR did not account for: one entry, never one per
  // series (they would all read the same). Without the EMR's answer it is
  // the report as stored in the study, to be opened from the EMR.
  const others = reports === undefined ? [] : docs.filter((s) => !absorbed.has(s.uid));
  if (others.length) {
    entries.push({
      kind: 'label',
      key: reports ? 'viewer.series.document_other' : 'viewer.series.document',
      params: {},
      title: { key: reports ? 'viewer.series.document_other_title' : 'viewer.report.open_in_emr', params: {} },
      series: others.map((s) => s.uid),
    });
  }
  for (const s of nonImage) {
    if (s.modality === 'DOC') continue;
    entries.push({
      kind: 'label',
      key: '',
      text: `${s.modality} ${s.description}`.trim(),
      title: { text: `${s.number ?? ''} ${s.description}`.trim() },
      series: [s.uid],
    });
  }
  return entries;
}
