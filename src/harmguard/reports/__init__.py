"""Reports a reviewer reads: HTML pages with inline plots and Markdown summaries (templates under ``templates/``)."""
