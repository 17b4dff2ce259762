// Report panel: fill findings/conclusion from the Vietnamese template of a modality.
(function () {
  const picker = document.getElementById('report-template');
  const data = document.getElementById('report-templates');
  if (!picker || !data) return;
  const templates = JSON.parse(data.textContent);
  function apply(onlyEmpty) {
    const tpl = templates[picker.value];
    if (!tpl) return;
    document.querySelectorAll('textarea[data-field]').forEach((area) => {
      const text = tpl[area.dataset.field];
      if (text && (!onlyEmpty || !area.value.trim())) area.value = text;
    });
  }
  picker.addEventListener('change', () => apply(false));
  apply(true);
})();
