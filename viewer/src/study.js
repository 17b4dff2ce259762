// A study as the viewer sees it: its series (QIDO-RS) and, per series, the
// ordered wadors imageIds with their metadata registered for the loader.
import dicomImageLoader from '@cornerstonejs/dicom-image-loader';
import { tagValue, isImageSeries, pickFirstSeries, orderInstances } from './rules.js';

function describeSeries(item) {
  const number = Number(tagValue(item, '00200011'));
  return {
    uid: tagValue(item, '0020000E'),
    number: Number.isFinite(number) ? number : null,
    description: tagValue(item, '0008103E') || '',
    modality: tagValue(item, '00080060') || '',
    count: Number(tagValue(item, '00201209')) || 0,
    isImage: isImageSeries(item),
    raw: item,
  };
}

export async function loadSeriesList(client, studyUid) {
  const path = `/studies/${encodeURIComponent(studyUid)}/series`;
  const { body, headers } = await client.getJson(path);
  const defaultUid = pickFirstSeries(body);
  const series = body.map(describeSeries).filter((s) => s.uid);
  series.sort((a, b) => (a.number ?? 1e9) - (b.number ?? 1e9) || (a.uid < b.uid ? -1 : 1));
  return {
    series,
    defaultUid,
    arriving: headers?.get?.('X-Study-Arriving') === '1',
  };
}

// Fetch a series' metadata, register it with the wadors loader and return
// the imageIds in display order (head to feet / by position, then number).
export async function loadSeriesStack(client, studyUid, seriesUid) {
  const path = `/studies/${encodeURIComponent(studyUid)}/series/${encodeURIComponent(seriesUid)}/metadata`;
  const { body } = await client.getJson(path);
  const instances = orderInstances(body).map((meta) => ({
    meta,
    sop: tagValue(meta, '00080018'),
    frames: Number(tagValue(meta, '00280008')) || 1,
  }));
  const imageIds = [];
  const base = `${client.absoluteRoot}/studies/${studyUid}/series/${seriesUid}/instances`;
  for (const inst of instances) {
    if (!inst.sop) continue;
    for (let frame = 1; frame <= inst.frames; frame += 1) {
      const imageId = `wadors:${base}/${inst.sop}/frames/${frame}`;
      dicomImageLoader.wadors.metaDataManager.add(imageId, inst.meta);
      imageIds.push(imageId);
    }
  }
  const first = body[0] || {};
  // Cornerstone's CPU path renders fractional rescale values wrongly; such
  // series are shown with WebGL (see cornerstone.js).
  const fractionalRescale = body.some((m) => {
    const slope = Number(tagValue(m, '00281053') ?? 1);
    const intercept = Number(tagValue(m, '00281052') ?? 0);
    return slope % 1 !== 0 || intercept % 1 !== 0;
  });
  return {
    fractionalRescale,
    imageIds,
    multiframe: instances.length === 1 && instances[0].frames > 1,
    frameTime: Number(tagValue(first, '00181063')) || 0,
    cineRate: Number(tagValue(first, '00180040')) || 0,
    firstMeta: first,
    instanceCount: instances.length,
  };
}
