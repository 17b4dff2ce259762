// Runtime configuration from the page URL:
//   ?study=<StudyInstanceUID>&token=<share token>&dicomweb=<same-origin path>
// The DICOMweb root must be a same-origin path: a share token must never be
// sent to another host.

export function readConfig(location = window.location) {
  const params = new URLSearchParams(location.search);
  let root = params.get('dicomweb') || '/dicomweb';
  if (!/^\/(?!\/)/.test(root)) root = '/dicomweb';
  root = root.replace(/\/+$/, '');
  return {
    study: params.get('study') || '',
    token: params.get('token') || '',
    series: params.get('series') || '',
    render: params.get('render') || '',
    root,
    // Where measurements are saved (same-origin path; the EMR's by default).
    measurementsRoot: /^\/(?!\/)/.test(params.get('measurements') || '') ? params.get('measurements') : '/reading/measurements',
    absoluteRoot: location.origin + root,
  };
}
