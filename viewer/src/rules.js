// The rules the first stage (early.js, inlined into index.html) and the
// Cornerstone bundle must agree on, in one place: the page's configuration,
// which series opens first, slice order and the window presets.
//
// Plain functions of their arguments (no DOM, no globals, no imports), so
// that viewer/inline-early.js can paste this file into the inline script
// and `node --test viewer/test/` can exercise it. Only `export function` and
// `export const` declarations: the inliner drops the `export` keyword.

// Modalities whose series carry no pixels to show (reports, structured
// reports, presentation states, segmentations, registrations, plans).
export const NON_IMAGE_MODALITIES = ['SR', 'PR', 'KO', 'SEG', 'RTSTRUCT', 'RTPLAN', 'DOC', 'REG'];

// Transfer syntaxes the first stage can draw without a codec (PS3.5 A.1, A.2).
export const UNCOMPRESSED_SYNTAXES = ['1.2.840.10008.1.2', '1.2.840.10008.1.2.1'];

// First value of a DICOM JSON attribute (PS3.18 F.2), or undefined.
export function tagValue(item, tag) {
  const el = item && item[tag];
  return el && el.Value && el.Value.length ? el.Value[0] : undefined;
}

// All values of a DICOM JSON attribute ([] when absent).
export function tagValues(item, tag) {
  const el = item && item[tag];
  return (el && el.Value) || [];
}

export function isImageSeries(item) {
  return NON_IMAGE_MODALITIES.indexOf(tagValue(item, '00080060')) < 0;
}

// Same-origin absolute path, never "//host" (a share token must not leave
// the origin).
function sameOriginPath(value) {
  return typeof value === 'string' && /^\/(?!\/)/.test(value);
}

// The viewer's configuration from the page's query string:
//   ?study=<StudyInstanceUID>&series=<SeriesInstanceUID>&token=<share token>
//   &dicomweb=<same-origin path>&measurements=<same-origin path>&render=cpu|gpu
export function readConfig(search, origin) {
  const params = new URLSearchParams(search || '');
  let root = params.get('dicomweb') || '/dicomweb';
  if (!sameOriginPath(root)) root = '/dicomweb';
  root = root.replace(/\/+$/, '') || '/dicomweb';
  const render = params.get('render');
  const measurements = params.get('measurements');
  return {
    study: params.get('study') || '',
    token: params.get('token') || '',
    series: params.get('series') || '',
    render: render === 'cpu' || render === 'gpu' ? render : '',
    root,
    // Where measurements are saved (same-origin path; the EMR's by default).
    measurementsRoot: sameOriginPath(measurements) ? measurements.replace(/\/+$/, '') : '/reading/measurements',
    absoluteRoot: (origin || '') + root,
  };
}

// The series shown first: the image series with the lowest SeriesNumber
// (series without a number last), ties broken by Series Instance UID; null
// when the study has no image series. `list` is a QIDO-RS series response.
export function pickFirstSeries(list) {
  let best = null;
  let bestNumber = 0;
  for (const item of list || []) {
    const uid = tagValue(item, '0020000E');
    if (!uid || !isImageSeries(item)) continue;
    const raw = tagValue(item, '00200011');
    const number = raw === undefined || raw === null || raw === '' || !isFinite(Number(raw)) ? Infinity : Number(raw);
    if (best === null || number < bestNumber || (number === bestNumber && uid < best)) {
      best = uid;
      bestNumber = number;
    }
  }
  return best;
}

// Slice order for a series' WADO-RS metadata: by position along the slice
// normal (ImageOrientationPatient × ImagePositionPatient, PS3.3 C.7.6.2.1.1),
// highest first (head first for axial LPS), then InstanceNumber; by
// InstanceNumber alone when any instance lacks geometry. Returns a new array.
export function orderInstances(metadata) {
  const list = metadata || [];
  const iop = tagValues(list[0], '00200037').map(Number);
  let normal = null;
  if (iop.length === 6 && iop.every(isFinite)) {
    normal = [iop[1] * iop[5] - iop[2] * iop[4], iop[2] * iop[3] - iop[0] * iop[5], iop[0] * iop[4] - iop[1] * iop[3]];
  }
  const items = list.map((meta, order) => {
    const pos = tagValues(meta, '00200032').map(Number);
    const position =
      normal && pos.length === 3 && pos.every(isFinite) ? pos[0] * normal[0] + pos[1] * normal[1] + pos[2] * normal[2] : null;
    return { meta, order, number: Number(tagValue(meta, '00200013')) || 0, position };
  });
  const byPosition = items.length > 1 && items.every((i) => i.position !== null);
  items.sort((a, b) =>
    byPosition
      ? b.position - a.position || a.number - b.number || a.order - b.order
      : a.number - b.number || a.order - b.order,
  );
  return items.map((i) => i.meta);
}

// Window presets (width / level in HU) radiologists expect on CT; the keys
// name their labels in the catalogue (viewer.preset.<key>).
export const PRESETS = [
  { key: 'brain', width: 80, center: 40 },
  { key: 'lung', width: 1500, center: -600 },
  { key: 'bone', width: 1800, center: 400 },
  { key: 'abdomen', width: 400, center: 50 },
  { key: 'mediastinum', width: 350, center: 50 },
];

// Cornerstone's VOI range for a DICOM window centre and width.
export function voiRange(center, width) {
  return { lower: center - width / 2, upper: center + width / 2 };
}

// The inverse of voiRange; null without a range.
export function centerWidth(range) {
  if (!range) return null;
  return { center: (range.upper + range.lower) / 2, width: range.upper - range.lower };
}

// The preset a key (1–5 on the keyboard, in order) selects, or null.
export function presetForKey(key) {
  return /^[1-9]$/.test(key) ? PRESETS[Number(key) - 1] || null : null;
}
