# frozen_string_literal: true

# Renders jobs of this release onto a VM-like file tree under a root directory, laid out as the
# BOSH agent lays out a VM: ROOT/var/vcap/jobs/<job>/<destination> for every template (bin/ 0750,
# everything else 0640) and ROOT/var/vcap/jobs/<job>/monit. Every "/var/vcap/" in the rendered
# text is rewritten to "ROOT/var/vcap/", so the scripts, configs and bpm.yml of the result refer to
# the tree itself and run without a BOSH VM (the BBR end-to-end test places its stand-ins for
# monit, bpm and database-backup-restorer in the same tree). Links between the given jobs resolve
# by type, as the Director resolves implicit links within a deployment; their one instance has
# address 127.0.0.1.
#
#   ruby scripts/lib/render_jobs.rb --root DIR < jobs.json
#
# jobs.json: {"jobs": [{"name": "silk-controller", "properties": {...}}, ...]}. Prints the
# rendered paths; a template that fails to render exits 1 with its error.

require 'fileutils'
require 'json'
require_relative '../../spec/support/bosh_template'

module RenderJobs
  RELEASE_DIR = File.expand_path('../..', __dir__)

  # { job name => { destination => rendered text } } for `jobs` ([{name, properties}]).
  def self.render(jobs, release_dir: RELEASE_DIR)
    release = BoshTemplate::ReleaseDir.new(release_dir)
    jobs.to_h do |job|
      bosh_job = release.job(job.fetch('name'))
      links = links_for(release, bosh_job, jobs)
      properties = job['properties'] || {}
      rendered = (bosh_job.templates + ['monit']).to_h do |dest|
        [dest, bosh_job.template(dest).render(properties, consumes: links)]
      end
      [bosh_job.name, rendered]
    end
  end

  def self.links_for(release, bosh_job, jobs)
    (bosh_job.spec['consumes'] || []).filter_map do |consumed|
      provider, link_name = jobs.lazy.filter_map do |other|
        provided = (release.job(other['name']).spec['provides'] || []).find { |l| l['type'] == consumed['type'] }
        [other, provided['name']] if provided
      end.first
      if provider.nil?
        next if consumed['optional']

        raise "job #{bosh_job.name} consumes link #{consumed['name']} (type #{consumed['type']}): no job given provides it"
      end
      properties = release.job(provider['name']).provided_link_properties(link_name, provider['properties'] || {})
      BoshTemplate::Link.new(name: consumed['name'], properties: properties,
                             instances: [BoshTemplate::LinkInstance.new(address: '127.0.0.1')])
    end
  end

  # Writes the rendered jobs under `root` with /var/vcap/ rewritten into it; returns the paths.
  def self.install(root, rendered)
    root = File.expand_path(root)
    rendered.flat_map do |job, files|
      files.map do |dest, text|
        path = File.join(root, 'var', 'vcap', 'jobs', job, dest)
        FileUtils.mkdir_p(File.dirname(path))
        File.write(path, text.gsub('/var/vcap/', "#{root}/var/vcap/"))
        File.chmod(dest.start_with?('bin/') ? 0o750 : 0o640, path)
        path
      end
    end
  end
end

if $PROGRAM_NAME == __FILE__
  root = ARGV[ARGV.index('--root').to_i + 1] if ARGV.include?('--root')
  abort 'usage: ruby scripts/lib/render_jobs.rb --root DIR < jobs.json' if root.nil? || root.empty?
  begin
    jobs = JSON.parse($stdin.read).fetch('jobs')
    puts RenderJobs.install(root, RenderJobs.render(jobs))
  rescue StandardError => e
    warn "render_jobs: #{e.message}"
    exit 1
  end
end
