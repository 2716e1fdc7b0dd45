"""Documents in asks: extraction of PDF, DOCX, HTML, Markdown and plain text (``extract``), the
content-hash cache of extracted text (``cache``), and the provider-side step that turns Document
parts into what one provider is sent (``prepare``)."""
