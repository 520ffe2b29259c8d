// @ts-check
// UI texts of the Outlook task pane, German first, English second. No De-Mail rule
// lives here: every decision and every reason text comes from the core, and so do the
// options with their labels (`core.optionList()`); only the hints are ours, by option id.

const de = {
  title: "De-Mail",
  loading: "De-Mail-Modul wird geladen …",
  markAsDemail: "Als De-Mail senden",
  markAsDemailHint: "Wird automatisch eingeschaltet, sobald Sie eine Option wählen oder einen De-Mail-Empfänger eintragen.",
  optionsLegend: "Versandoptionen",
  "optHint.private": "Nur die Empfängerin oder der Empfänger selbst darf die Nachricht öffnen.",
  "optHint.confirmation-of-dispatch": "Sie erhalten eine Bestätigung, dass die De-Mail versandt wurde.",
  "optHint.confirmation-of-receipt": "Sie erhalten eine Bestätigung, dass die De-Mail im Postfach angekommen ist.",
  "optHint.confirmation-of-retrieve": "Sie erhalten eine Bestätigung, wenn die De-Mail abgeholt wurde (nur mit „Persönlich“).",
  "optHint.authoritative": "Der Empfang bestätigt, dass die Nachricht von Ihrer Behörde kommt.",
  privateIdLabel: "Nachrichten-Kennung (z. B. Aktenzeichen)",
  privateIdHint: "Erscheint in allen Bestätigungen zu dieser De-Mail. Bleibt das Feld leer, wird eine Kennung erzeugt.",
  recipientsHeading: "Empfänger",
  noRecipients: "Noch keine Empfänger eingetragen.",
  "kind.demail": "De-Mail",
  "kind.internal": "E-Mail (intern)",
  "kind.external": "E-Mail (extern)",
  headersHeading: "Gesetzte De-Mail-Kennzeichen",
  noHeaders: "Keine – die Nachricht geht als normale E-Mail.",
  writeFailed: "Die De-Mail-Kennzeichen konnten nicht in die Nachricht geschrieben werden.",
  notCompose: "Dieser Bereich ist nur beim Schreiben einer Nachricht verfügbar.",
  tooOld: "Diese Outlook-Version unterstützt diesen De-Mail-Bereich nicht (nötig: Mailbox 1.8). Der Sendeschutz durch Exchange und das Gateway gilt weiter. Bitte wenden Sie sich an Ihre IT.",
  // read mode
  readHeading: "De-Mail-Angaben",
  "readKind.demail": "Diese Nachricht ist eine De-Mail.",
  "readKind.receipt": "Diese Nachricht ist eine De-Mail-Bestätigung.",
  "readKind.notification": "Diese Nachricht ist eine Meldung Ihres De-Mail-Anbieters.",
  "readKind.malware": "Der De-Mail-Anbieter meldet Schadsoftware in einer Nachricht.",
  "readKind.email": "Diese Nachricht ist keine De-Mail, sondern eine normale E-Mail.",
  readOptions: "Versandoptionen",
  readNoOptions: "keine",
  readAuthLevel: "Anmeldung des Absenders",
  "auth.high": "hoch (sichere Anmeldung, z. B. mit Online-Ausweis)",
  "auth.normal": "normal (Benutzername und Passwort)",
  "auth.unknown": "nicht angegeben",
  readPrivateId: "Nachrichten-Kennung",
  readSender: "De-Mail-Absender",
  readReceiptConfirms: "Was diese Bestätigung belegt",
  "receipt.dispatch": "Der De-Mail-Anbieter des Absenders hat die De-Mail versandt (Versandbestätigung).",
  "receipt.receipt": "Die De-Mail ist im Postfach der Empfängerin oder des Empfängers eingegangen (Eingangsbestätigung). Das heißt noch nicht, dass sie gelesen wurde.",
  "receipt.retrieve": "Die Empfängerin oder der Empfänger hat sich sicher angemeldet und die De-Mail abgeholt (Abholbestätigung).",
  readReceiptFor: "Bestätigt wird die Nachricht",
  readReceiptTime: "Zeitpunkt",
  categoryApplied: "Kategorie gesetzt:",
  categoryFailed: "Die Kategorie konnte nicht gesetzt werden.",
  readIntegrityHeading: "Signatur des De-Mail-Anbieters",
  "integrity.valid": "✔ Geprüft: Die Signatur des De-Mail-Anbieters ist gültig. Die Nachricht wurde seit dem Versand nicht verändert.",
  "integrity.hash-only": "Nur eine Prüfsumme, keine Signatur: Die Nachricht stimmt mit der Prüfsumme des Anbieters überein, ihre Herkunft ist damit nicht belegt.",
  "integrity.warning": "⚠ Achtung: Die Signatur des De-Mail-Anbieters ist nicht gültig. Verlassen Sie sich nicht auf Inhalt und Absender dieser Nachricht.",
  "integrity.unavailable": "Diese Outlook-Version kann die Signatur des Anbieters nicht prüfen (Mailbox 1.14 nötig).",
  readSigner: "Signiert von",
  readFailed: "Die Kopfzeilen dieser Nachricht konnten nicht gelesen werden.",
  warnings: "Hinweise",
};

const en = {
  title: "De-Mail",
  loading: "Loading the De-Mail module …",
  markAsDemail: "Send as De-Mail",
  markAsDemailHint: "Switched on automatically as soon as you choose an option or add a De-Mail recipient.",
  optionsLegend: "Shipping options",
  "optHint.private": "Only the recipient in person may open the message.",
  "optHint.confirmation-of-dispatch": "You get a confirmation that the De-Mail was sent.",
  "optHint.confirmation-of-receipt": "You get a confirmation that the De-Mail reached the mailbox.",
  "optHint.confirmation-of-retrieve": "You get a confirmation when the De-Mail was retrieved (only with \"Personal\").",
  "optHint.authoritative": "The recipient gets confirmation that the message comes from your authority.",
  privateIdLabel: "Message reference (e.g. file number)",
  privateIdHint: "Appears in every receipt for this De-Mail. If left empty, a reference is generated.",
  recipientsHeading: "Recipients",
  noRecipients: "No recipients yet.",
  "kind.demail": "De-Mail",
  "kind.internal": "E-mail (internal)",
  "kind.external": "E-mail (external)",
  headersHeading: "De-Mail markings set",
  noHeaders: "None – the message goes as ordinary e-mail.",
  writeFailed: "The De-Mail markings could not be written into the message.",
  notCompose: "This pane is available only while writing a message.",
  tooOld: "This Outlook version does not support this De-Mail pane (Mailbox 1.8 needed). Exchange and the gateway still protect sending. Please contact your IT department.",
  readHeading: "De-Mail details",
  "readKind.demail": "This message is a De-Mail.",
  "readKind.receipt": "This message is a De-Mail receipt.",
  "readKind.notification": "This message is a notification from your De-Mail provider.",
  "readKind.malware": "The De-Mail provider reports malware in a message.",
  "readKind.email": "This message is not a De-Mail but an ordinary e-mail.",
  readOptions: "Shipping options",
  readNoOptions: "none",
  readAuthLevel: "Sender's log-in",
  "auth.high": "high (secure log-in, e.g. with the online ID card)",
  "auth.normal": "normal (user name and password)",
  "auth.unknown": "not stated",
  readPrivateId: "Message reference",
  readSender: "De-Mail sender",
  readReceiptConfirms: "What this receipt proves",
  "receipt.dispatch": "The sender's De-Mail provider sent the De-Mail (confirmation of dispatch).",
  "receipt.receipt": "The De-Mail reached the recipient's mailbox (confirmation of receipt). This does not yet mean it was read.",
  "receipt.retrieve": "The recipient logged in securely and retrieved the De-Mail (confirmation of retrieval).",
  readReceiptFor: "Confirmed message",
  readReceiptTime: "Time",
  categoryApplied: "Category applied:",
  categoryFailed: "The category could not be applied.",
  readIntegrityHeading: "The De-Mail provider's signature",
  "integrity.valid": "✔ Checked: the De-Mail provider's signature is valid. The message has not been changed since it was sent.",
  "integrity.hash-only": "Only a checksum, no signature: the message matches the provider's checksum, but its origin is not proven by it.",
  "integrity.warning": "⚠ Warning: the De-Mail provider's signature is not valid. Do not rely on the content and sender of this message.",
  "integrity.unavailable": "This version of Outlook cannot check the provider's signature (Mailbox 1.14 needed).",
  readSigner: "Signed by",
  readFailed: "The headers of this message could not be read.",
  warnings: "Notes",
};

/** German unless Outlook's display language is something else. */
export function language(displayLanguage) {
  return typeof displayLanguage === "string" && displayLanguage && !/^de\b/i.test(displayLanguage) ? "en" : "de";
}

export function strings(lang) {
  return lang === "en" ? en : de;
}

/** A core text in the UI language (the core gives `message` in German, `message_en` in English). */
export function coreText(reason, lang) {
  if (!reason) return "";
  return lang === "en" ? reason.message_en || reason.message || "" : reason.message || reason.message_en || "";
}

/** Option id → label in the UI language, from the core's option table. */
export function optionLabels(table, lang) {
  return new Map(table.map((o) => [o.id, lang === "en" ? o.label_en : o.label]));
}

export const ALL_STRINGS = { de, en };
