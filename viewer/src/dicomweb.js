// QIDO-RS / WADO-RS client for the few requests the viewer makes itself
// (frames go through the dicom-image-loader). Errors carry the HTTP status
// so the UI can pick the right message (401 login, 403 rights, 410 expired
// link, 404 missing study).

export class DicomwebError extends Error {
  constructor(status, url, code = '') {
    super(`DICOMweb ${status} for ${url}`);
    this.status = status;
    this.url = url;
    this.code = code;
  }
}

export function createClient({ root, absoluteRoot, token }) {
  const early = window.filmlessEarly?.requests ?? {};
  const authHeaders = token ? { 'X-Share-Token': token } : {};

  async function request(url, accept) {
    if (early[url]) {
      const promise = early[url];
      delete early[url];
      try {
        return await promise;
      } catch {
        // fall through to a fresh request
      }
    }
    let response;
    try {
      response = await fetch(url, {
        headers: { Accept: accept, ...authHeaders },
        credentials: 'same-origin',
      });
    } catch (err) {
      throw new DicomwebError(0, url, 'network');
    }
    const text = accept.startsWith('image/') ? '' : await response.text();
    return { status: response.status, headers: response.headers, text, response };
  }

  async function getJson(path) {
    const url = root + path;
    const res = await request(url, 'application/dicom+json');
    if (res.status === 204) return { body: [], headers: res.headers };
    if (res.status !== 200) {
      let code = '';
      try {
        code = JSON.parse(res.text).error || '';
      } catch {
        // not a JSON error body
      }
      throw new DicomwebError(res.status, url, code);
    }
    const body = res.json !== undefined ? res.json : res.text ? JSON.parse(res.text) : [];
    return { body, headers: res.headers };
  }

  async function getBlob(path, accept = 'image/jpeg') {
    const url = root + path;
    const response = await fetch(url, {
      headers: { Accept: accept, ...authHeaders },
      credentials: 'same-origin',
    });
    if (!response.ok) throw new DicomwebError(response.status, url);
    return response.blob();
  }

  return { root, absoluteRoot, authHeaders, getJson, getBlob };
}

export { tagValue, tagValues } from './rules.js';
import { tagValue } from './rules.js';

export function personName(item, tag) {
  const v = tagValue(item, tag);
  if (!v) return '';
  const name = typeof v === 'string' ? v : v.Alphabetic || '';
  return name.replace(/\^+/g, ' ').trim();
}
