//! Look up and annotate contacts and accounts in a REST CRM.
