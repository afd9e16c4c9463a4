# frozen_string_literal: true

require 'yaml'
require_relative 'bosh_template'
require_relative 'ops_file'

# A cf-deployment manifest seen the way the Director sees our silk jobs: `((vars))` replaced by
# placeholders, links resolved implicitly by type (skipping providers blocked with `nil`), and
# each silk job's templates rendered through BoshTemplate.
class Deployment
  FIXTURES = File.join(RELEASE_DIR, 'spec', 'fixtures', 'cf-deployment')

  attr_reader :manifest

  def self.fixture_path(*parts)
    File.join(FIXTURES, *parts)
  end

  def self.load_yaml(path)
    YAML.safe_load(File.read(path), aliases: true)
  end

  # cf-deployment.yml with fixture ops files (relative to operations/) and then
  # our ops files (relative to manifests/operations/), applied in order.
  def self.build(fixture_ops: [], our_ops: [], vars: {})
    doc = OpsFile.deep_copy(load_yaml(fixture_path('cf-deployment.yml')))
    fixture_ops.each { |f| doc = OpsFile.apply_all(doc, load_yaml(fixture_path('operations', f))) }
    our_ops.each { |f| doc = OpsFile.apply_all(doc, load_yaml(File.join(RELEASE_DIR, 'manifests', 'operations', f))) }
    new(interpolate(doc, vars))
  end

  def self.interpolate(value, vars)
    case value
    when Hash then value.transform_values { |v| interpolate(v, vars) }
    when Array then value.map { |v| interpolate(v, vars) }
    when String
      whole = value.match(/\A\(\(([^()]+)\)\)\z/)
      return vars.fetch(whole[1], "placeholder-#{whole[1]}") if whole

      value.gsub(/\(\(([^()]+)\)\)/) { vars.fetch(Regexp.last_match(1), "placeholder-#{Regexp.last_match(1)}").to_s }
    else value
    end
  end

  def initialize(manifest)
    @manifest = manifest
    @release = BoshTemplate::ReleaseDir.new(RELEASE_DIR)
  end

  def release_entry(name)
    manifest['releases'].find { |r| r['name'] == name }
  end

  def instance_groups
    manifest['instance_groups']
  end

  # [[instance group, job]] for every job of the given release.
  def jobs_of(release_name)
    instance_groups.flat_map { |ig| (ig['jobs'] || []).select { |j| j['release'] == release_name }.map { |j| [ig, j] } }
  end

  def flat_properties(hash, prefix = nil)
    (hash || {}).flat_map do |key, value|
      name = [prefix, key].compact.join('.')
      value.is_a?(Hash) && !value.empty? ? flat_properties(value, name) : [name]
    end
  end

  # Manifest property names of a job that its spec does not declare (so BOSH would drop them).
  def undeclared_properties(job)
    declared = @release.job(job['name']).declared_properties.keys
    flat_properties(job['properties']).reject do |name|
      parts = name.split('.')
      (1..parts.length).any? { |n| declared.include?(parts.first(n).join('.')) }
    end
  end

  def link_provider(type)
    jobs_of('silk').each do |_ig, job|
      spec = @release.job(job['name']).spec
      (spec['provides'] || []).each do |link|
        next unless link['type'] == type
        next if (job['provides'] || {}).key?(link['name']) && job['provides'][link['name']].nil?

        return [job, link['name']]
      end
    end
    nil
  end

  # Links a job consumes, resolved implicitly by type as the Director does within a deployment.
  def links_for(instance_group, job)
    spec = @release.job(job['name']).spec
    (spec['consumes'] || []).filter_map do |consumed|
      next if (job['consumes'] || {}).key?(consumed['name']) && job['consumes'][consumed['name']].nil?

      if consumed['type'] == 'iptables'
        garden = (instance_group['jobs'] || []).find { |j| j['name'] == 'garden' }
        next if garden.nil?

        bin_dir = BoshTemplate.lookup(garden['properties'] || {}, 'garden.iptables_bin_dir') || '/sbin'
        next BoshTemplate::Link.new(name: consumed['name'], properties: { 'garden' => { 'iptables_bin_dir' => bin_dir } })
      end
      provider, link_name = link_provider(consumed['type'])
      next if provider.nil?

      properties = @release.job(provider['name']).provided_link_properties(link_name, provider['properties'] || {})
      BoshTemplate::Link.new(name: consumed['name'], properties: properties)
    end
  end

  def instance_spec(instance_group, networks: nil)
    networks ||= (instance_group['networks'] || []).each_with_index.to_h do |net, i|
      [net['name'], { 'ip' => "10.0.#{16 + i}.15", 'netmask' => '255.255.240.0', 'default' => (i.zero? ? %w[dns gateway] : []) }]
    end
    BoshTemplate::InstanceSpec.new(ip: '10.0.16.15', address: "#{instance_group['name']}.bosh", name: instance_group['name'],
                                   deployment: manifest['name'], networks: networks)
  end

  # { destination => rendered text } for every template and the monit file of a silk job.
  def render_job(instance_group, job, networks: nil)
    bosh_job = @release.job(job['name'])
    links = links_for(instance_group, job)
    spec = instance_spec(instance_group, networks: networks)
    (bosh_job.templates + ['monit']).to_h do |dest|
      [dest, bosh_job.template(dest).render(job['properties'] || {}, consumes: links, spec: spec)]
    end
  end
end
