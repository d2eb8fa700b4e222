"""FTP and explicit FTPS source module: :class:`~modules.ftp_module.main.FtpModule`."""
