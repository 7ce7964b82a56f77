"""The matrix: the document (JSON), its views (Markdown, terminal, HTML), the files a run
writes, and the comparison of two matrices (the regression gate's logic).
"""
