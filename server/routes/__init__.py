"""One router per resource: ``assets`` (the job/asset API) and ``files`` (the asset's static files)."""
