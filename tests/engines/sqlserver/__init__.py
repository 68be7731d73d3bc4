"""SQL Server engine tests. NOT RUN AGAINST A REAL SQL SERVER: none can run here."""
