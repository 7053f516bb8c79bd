"""The smtpd role (qmail-smtpd under tcpserver): SMTP sessions from accept to queue commit."""
