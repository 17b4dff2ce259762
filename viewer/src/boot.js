// Entry point: wait until early.js has drawn the first slice (or knows it
// cannot), then evaluate the interactive viewer and start it. Evaluating the
// Cornerstone bundle blocks the page for a while; doing it after the first
// image keeps that wait off the radiologist's time to first image.
import './style.css';

const settled = window.filmlessEarly?.previewSettled ?? Promise.resolve(false);
settled
  .then(() => import('./main.js'))
  .then(({ createViewer }) => {
    const viewer = createViewer();
    window.filmlessViewer = viewer.probe;
    return viewer.start();
  });
