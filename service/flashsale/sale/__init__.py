"""The service layer: the sale as the API sees it (`service`), the jobs that keep it
(`keeper`, `drain`) and the audit. No HTTP, no SQL, no Redis command here."""
