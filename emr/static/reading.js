// Report panel: fill findings/conclusion from the Vietnamese template of a modality the user picks.
// Only an explicit pick fills the fields. The server prefills a new report when it is first opened;
// it never fills a field on a re-render after a failed save, and neither does this script, so what
// the reader submitted (an empty conclusion included) is what the form shows.
(function () {
  const picker = document.getElementById('report-template');
  const data = document.getElementById('report-templates');
  if (!picker || !data) return;
  const templates = JSON.parse(data.textContent);
  picker.addEventListener('change', () => {
    const tpl = templates[picker.value];
    if (!tpl) return;
    document.querySelectorAll('textarea[data-field]').forEach((area) => {
      const text = tpl[area.dataset.field];
      if (text) area.value = text;
    });
  });
})();
